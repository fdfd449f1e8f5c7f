//! Reading the definitions PostgreSQL prints (`pg_get_indexdef`, `pg_get_constraintdef`,
//! `pg_get_triggerdef`): the tail of an index definition, a key list extended with the partition
//! key, a trigger aimed at another table. Pure text work, shared by the preflight (`plan`, which
//! judges whether a definition can be carried over) and the build (which renders it).

use super::inventory::Index;

/// The part of `pg_get_indexdef` after `... ON <table> USING `: access method, key list,
/// INCLUDE, WITH and WHERE clauses. `None` when the definition does not have the expected shape.
pub fn index_tail<'a>(i: &'a Index, printed_table: &str) -> Option<&'a str> {
    let prefix = format!(
        "CREATE {}INDEX {} ON {} USING ",
        if i.unique { "UNIQUE " } else { "" },
        i.printed_name,
        printed_table
    );
    i.definition.strip_prefix(&prefix)
}

/// Adds the key to the first parenthesized column list of `def` (an index tail such as
/// `btree (id) INCLUDE (x)` or a constraint such as `PRIMARY KEY (id)`) unless it is there.
/// `None` when the list holds an expression or cannot be found.
pub fn extend_key_list(def: &str, printed_key: &str) -> Option<String> {
    let open = def.find('(')?;
    let close = matching_paren(def, open)?;
    let items = split_top_level(&def[open + 1..close]);
    let mut has_key = false;
    for item in &items {
        let item = item.trim();
        if item.starts_with('(') || first_token(item).contains('(') {
            return None;
        }
        if first_token(item) == printed_key {
            has_key = true;
        }
    }
    if has_key {
        return Some(def.to_string());
    }
    Some(format!("{}, {printed_key}{}", &def[..close], &def[close..]))
}

/// First identifier of an index item (`"createdAt" DESC` → `"createdAt"`).
fn first_token(item: &str) -> &str {
    if let Some(rest) = item.strip_prefix('"') {
        let mut i = 0;
        let bytes = rest.as_bytes();
        while i < bytes.len() {
            if bytes[i] == b'"' {
                if bytes.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                return &item[..i + 2];
            }
            i += 1;
        }
        item
    } else {
        item.split_whitespace().next().unwrap_or("")
    }
}

/// Index of the `)` closing the `(` at `open`, skipping quoted identifiers and string literals.
fn matching_paren(s: &str, open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<u8> = None;
    for (i, &c) in s.as_bytes().iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(c),
            (None, b'(') => depth += 1,
            (None, b')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start, mut quote) = (0, 0, None::<u8>);
    for (i, &c) in s.as_bytes().iter().enumerate() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(c),
            (None, b'(') => depth += 1,
            (None, b')') => depth -= 1,
            (None, b',') if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A user trigger's definition aimed at `new_table`: the one ` ON <table> ` is replaced.
/// `None` when the table name does not occur exactly once.
pub fn retarget_trigger(def: &str, printed_table: &str, new_table: &str) -> Option<String> {
    let needle = format!(" ON {printed_table} ");
    if def.matches(&needle).count() != 1 {
        return None;
    }
    Some(def.replacen(&needle, &format!(" ON {new_table} "), 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_joins_primary_keys_and_unique_lists() {
        assert_eq!(
            extend_key_list("PRIMARY KEY (id)", "date").as_deref(),
            Some("PRIMARY KEY (id, date)")
        );
        assert_eq!(
            extend_key_list("UNIQUE (\"propertyId\", date) INCLUDE (price)", "date").as_deref(),
            Some("UNIQUE (\"propertyId\", date) INCLUDE (price)")
        );
        assert_eq!(
            extend_key_list("btree (\"a,b\" DESC) WHERE (x > 0)", "\"createdAt\"").as_deref(),
            Some("btree (\"a,b\" DESC, \"createdAt\") WHERE (x > 0)")
        );
        assert_eq!(extend_key_list("btree (lower(name))", "date"), None);
        assert_eq!(extend_key_list("btree ((a + b))", "date"), None);
    }

    #[test]
    fn index_definitions_are_read_only_in_the_expected_shape() {
        let i = Index {
            name: "Idx".into(),
            definition:
                "CREATE INDEX \"Idx\" ON public.pricing_data USING btree (\"propertyId\", date)"
                    .into(),
            printed_name: "\"Idx\"".into(),
            unique: false,
            primary: false,
            constraint: false,
            valid: true,
            bytes: 0,
        };
        assert_eq!(
            index_tail(&i, "public.pricing_data"),
            Some("btree (\"propertyId\", date)")
        );
        assert_eq!(index_tail(&i, "public.other"), None);
    }

    #[test]
    fn triggers_are_retargeted_only_when_the_table_appears_once() {
        let def = "CREATE TRIGGER audit AFTER UPDATE ON public.pricing_data FOR EACH ROW EXECUTE FUNCTION audit()";
        assert_eq!(
            retarget_trigger(def, "public.pricing_data", "\"public\".\"new\"").as_deref(),
            Some("CREATE TRIGGER audit AFTER UPDATE ON \"public\".\"new\" FOR EACH ROW EXECUTE FUNCTION audit()")
        );
        assert_eq!(retarget_trigger(def, "public.other", "x"), None);
    }
}
