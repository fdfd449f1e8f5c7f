//! The sync triggers, rendered from the [`Blueprint`] (pure). Forward: from `build` until the swap,
//! every write to the original is applied to the new table in the writer's own transaction.
//! Reverse: from the swap until `finalize`, every write to the new table is applied to the backup,
//! so that `rollback` loses nothing.
//!
//! Both are `SECURITY DEFINER` with a fixed `search_path` and fully qualified names: the
//! application's role needs no rights on our objects, and nothing it sets can redirect them.

use super::{
    Blueprint, FORWARD_TRIGGER, FORWARD_TRUNCATE_TRIGGER, REVERSE_TRIGGER, REVERSE_TRUNCATE_TRIGGER,
};
use crate::ident::{quote_ident, QualifiedName};

/// Dollar-quote tag of the function bodies (it cannot occur in an identifier we splice: those are
/// always double-quoted, and a fill expression with any `$` is refused by [`super::fill`]).
pub const BODY_TAG: &str = "$partkeeper_sync$";

/// `CREATE OR REPLACE FUNCTION` for the forward (original → new) sync.
pub fn forward_function(b: &Blueprint) -> String {
    let new = b.partitioned.quoted();
    let cols = Blueprint::list(&b.columns);
    let conflict = Blueprint::list(&b.new_pk);
    let upsert = |rec: &str, set: &str| {
        format!(
            "INSERT INTO {new} ({cols}){} SELECT {} FROM (SELECT {rec}.*) AS s ON CONFLICT ({conflict}) DO {set};",
            b.overriding_clause(),
            b.select_list("s."),
        )
    };
    let key_of = |rec: &str| format!("SELECT {} FROM (SELECT {rec}.*) AS s", b.filled_key("s."));
    let pk_changed =
        b.pk.iter()
            .map(|c| format!("OLD.{0} IS DISTINCT FROM NEW.{0}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" OR ");
    let match_old = b
        .new_pk
        .iter()
        .map(|c| {
            if *c == b.key {
                format!("{} = _pk_old_key", quote_ident(c))
            } else {
                format!("{0} = OLD.{0}", quote_ident(c))
            }
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    // A REPEATABLE READ writer cannot see a row the copier committed after its snapshot; upserting
    // the old row first makes that a serialization failure (retried by such writers) instead of a
    // delete that silently misses the row.
    let touch_col = b
        .columns
        .iter()
        .find(|c| !b.no_update.contains(c))
        .cloned()
        .unwrap_or_else(|| b.key.clone());
    let guard = format!(
        "IF current_setting('transaction_isolation') <> 'read committed' THEN\n      {}\n    END IF;",
        upsert("OLD", &format!("UPDATE SET {0} = EXCLUDED.{0}", quote_ident(&touch_col)))
    );
    // The copy reads without row locks: a row it read may be deleted, moved to another key or
    // changed before it inserts it. Such keys are recorded so that `copy::settle` can bring
    // their rows up to date once the copy is done.
    let record = |rec: &str| match &b.gone {
        Some(gone) => format!(
            "\n      INSERT INTO {} ({}) VALUES ({});",
            gone.quoted(),
            Blueprint::list(&b.pk),
            b.pk.iter()
                .map(|c| format!("{rec}.{}", quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => String::new(),
    };
    let record_gone = record("OLD");
    // An update that keeps the key: with a gone table, the row is updated in place when it has
    // been copied, and otherwise only recorded (settle copies its current version). Inserting it
    // ahead of the copy would put keys to the right of the copy's position in the new primary key
    // index, and every page the copy then fills before them would be split in half.
    let update_same_key = match &b.gone {
        Some(_) => {
            let sets: Vec<String> = b
                .columns
                .iter()
                .filter(|c| !b.new_pk.contains(c) && !b.no_update.contains(c))
                .map(|c| format!("{0} = s.{0}", quote_ident(c)))
                .collect();
            let matches: Vec<String> = b
                .new_pk
                .iter()
                .map(|c| {
                    if *c == b.key {
                        format!("t.{} = _pk_new_key", quote_ident(c))
                    } else {
                        format!("t.{0} = s.{0}", quote_ident(c))
                    }
                })
                .collect();
            if sets.is_empty() {
                format!(
                    "PERFORM 1 FROM {new} AS t, (SELECT NEW.*) AS s WHERE {};\n      IF NOT FOUND THEN{}\n      END IF;",
                    matches.join(" AND "),
                    record("NEW")
                )
            } else {
                format!(
                    "UPDATE {new} AS t SET {} FROM (SELECT NEW.*) AS s WHERE {};\n      IF NOT FOUND THEN{}\n      END IF;",
                    sets.join(", "),
                    matches.join(" AND "),
                    record("NEW")
                )
            }
        }
        None => upsert("NEW", &b.update_set(&b.new_pk)),
    };
    format!(
        r#"CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS {tag}
DECLARE
  _pk_old_key {kt};
  _pk_new_key {kt};
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    TRUNCATE {new};
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    {upsert_new}
  ELSIF TG_OP = 'UPDATE' THEN
    _pk_old_key := ({old_key});
    _pk_new_key := ({new_key});
    IF {pk_changed} OR _pk_old_key IS DISTINCT FROM _pk_new_key THEN
    {guard}
      DELETE FROM {new} WHERE {match_old};{record_gone}
      {upsert_new}{record_new}
    ELSE
      {update_same_key}
    END IF;
  ELSE
    _pk_old_key := ({old_key});
    {guard}
    DELETE FROM {new} WHERE {match_old};{record_gone}
  END IF;
  RETURN NULL;
END
{tag}"#,
        record_gone = record_gone,
        record_new = if b.gone.is_some() {
            record("NEW")
        } else {
            String::new()
        },
        update_same_key = update_same_key,
        func = b.forward_function.quoted(),
        tag = BODY_TAG,
        kt = b.key_sql_type,
        upsert_new = upsert("NEW", &b.update_set(&b.new_pk)),
        old_key = key_of("OLD"),
        new_key = key_of("NEW"),
    )
}

/// `CREATE OR REPLACE FUNCTION` for the reverse (new → backup) sync.
pub fn reverse_function(b: &Blueprint) -> String {
    let backup = b.backup.quoted();
    let cols = Blueprint::list(&b.columns);
    let conflict = Blueprint::list(&b.pk);
    let plain: String = b
        .columns
        .iter()
        .map(|c| format!("s.{}", quote_ident(c)))
        .collect::<Vec<_>>()
        .join(", ");
    let upsert = format!(
        "INSERT INTO {backup} ({cols}){} SELECT {plain} FROM (SELECT NEW.*) AS s ON CONFLICT ({conflict}) DO {};",
        b.overriding_clause(),
        b.update_set(&b.pk)
    );
    let pk_changed =
        b.pk.iter()
            .map(|c| format!("OLD.{0} IS DISTINCT FROM NEW.{0}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" OR ");
    let match_old =
        b.pk.iter()
            .map(|c| format!("{0} = OLD.{0}", quote_ident(c)))
            .collect::<Vec<_>>()
            .join(" AND ");
    format!(
        r#"CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp AS {tag}
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    TRUNCATE {backup};
    RETURN NULL;
  END IF;
  IF TG_OP = 'INSERT' THEN
    {upsert}
  ELSIF TG_OP = 'UPDATE' THEN
    IF {pk_changed} THEN
      DELETE FROM {backup} WHERE {match_old};
    END IF;
    {upsert}
  ELSE
    DELETE FROM {backup} WHERE {match_old};
  END IF;
  RETURN NULL;
END
{tag}"#,
        func = b.reverse_function.quoted(),
        tag = BODY_TAG,
    )
}

/// The row and TRUNCATE triggers that call `func` on `table`.
pub fn create_triggers(
    table: &QualifiedName,
    func: &QualifiedName,
    row_trigger: &str,
    truncate_trigger: &str,
) -> Vec<String> {
    vec![
        format!(
            "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
            quote_ident(row_trigger),
            table.quoted(),
            func.quoted()
        ),
        format!(
            "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
            quote_ident(truncate_trigger),
            table.quoted(),
            func.quoted()
        ),
    ]
}

pub fn forward_triggers(b: &Blueprint, on: &QualifiedName) -> Vec<String> {
    create_triggers(
        on,
        &b.forward_function,
        FORWARD_TRIGGER,
        FORWARD_TRUNCATE_TRIGGER,
    )
}

pub fn reverse_triggers(b: &Blueprint, on: &QualifiedName) -> Vec<String> {
    create_triggers(
        on,
        &b.reverse_function,
        REVERSE_TRIGGER,
        REVERSE_TRUNCATE_TRIGGER,
    )
}

pub fn drop_triggers(on: &QualifiedName, names: [&str; 2]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote_ident(n),
                on.quoted()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migrate::tests::pricing_blueprint;

    #[test]
    fn forward_upserts_on_the_new_key_and_deletes_by_it() {
        let f = forward_function(&pricing_blueprint(Some("\"createdAt\"::date")));
        assert!(f.contains("SECURITY DEFINER"));
        assert!(f.contains("SET search_path = pg_catalog, pg_temp"));
        assert!(f.contains(
            "ON CONFLICT (\"id\", \"date\") DO UPDATE SET \"propertyId\" = EXCLUDED.\"propertyId\""
        ));
        assert!(f.contains("DELETE FROM \"public\".\"pricing_data_partitioned\" WHERE \"id\" = OLD.\"id\" AND \"date\" = _pk_old_key"));
        assert!(f.contains("COALESCE(s.\"date\", (\"createdAt\"::date)::date)"));
        assert!(f.contains("transaction_isolation"));
    }

    #[test]
    fn reverse_upserts_on_the_original_primary_key() {
        let f = reverse_function(&pricing_blueprint(None));
        assert!(f.contains("INSERT INTO \"public\".\"pricing_data_backup\""));
        assert!(f.contains("ON CONFLICT (\"id\") DO UPDATE SET"));
        assert!(f.contains("\"date\" = EXCLUDED.\"date\""));
    }
}
