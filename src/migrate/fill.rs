//! `--fill-null-with`: the SQL expression that fills NULL partition keys. It is the operator's
//! SQL, so it is run as given, but only ever as one expression: its shape is checked here (no
//! `;`, no comment, no dollar quote or parameter, balanced parentheses and quotes, so it cannot
//! end the expression it is placed in), then the server parses it as `SELECT (<fill>)::<key type>
//! FROM <table>` through the extended protocol, which takes exactly one statement. Every
//! statement that carries it afterwards (the copy, the forward trigger's function, verify) is
//! sent through the extended protocol too.

use sqlx::PgConnection;

use crate::ident::QualifiedName;

/// Why a fill expression is refused (a usage error: exit 2, nothing changed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FillError {
    #[error("--fill-null-with is empty; give an SQL expression over the table's columns, e.g. '\"createdAt\"::date'")]
    Empty,
    #[error("--fill-null-with {fill:?} is not one SQL expression: {why}. Give a single expression over the table's columns, e.g. '\"createdAt\"::date'")]
    NotOneExpression { fill: String, why: &'static str },
    #[error("--fill-null-with {fill}: {reason}. Give an SQL expression over the columns of {table} that converts to {key_type}, e.g. '\"createdAt\"::date'")]
    Rejected {
        fill: String,
        table: QualifiedName,
        key_type: String,
        reason: String,
    },
}

/// The lexical check: quotes, parentheses, and nothing that could end or comment out the
/// expression around it.
pub fn check_shape(fill: &str) -> Result<(), FillError> {
    if fill.trim().is_empty() {
        return Err(FillError::Empty);
    }
    let bad = |why| {
        Err(FillError::NotOneExpression {
            fill: fill.to_string(),
            why,
        })
    };
    let chars: Vec<char> = fill.chars().collect();
    let mut depth = 0i32;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\'' => {
                // An E'' string takes backslash escapes.
                let escapes = i > 0
                    && matches!(chars[i - 1], 'e' | 'E')
                    && (i < 2 || !(chars[i - 2].is_alphanumeric() || chars[i - 2] == '_'));
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return bad("a quoted string is not closed"),
                        Some('\\') if escapes => i += 2,
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => i += 2,
                        Some('\'') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            '"' => {
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return bad("a quoted name is not closed"),
                        Some('"') if chars.get(i + 1) == Some(&'"') => i += 2,
                        Some('"') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            ';' => return bad("it contains ';'"),
            '$' => return bad("it contains '$' (dollar quoting or a parameter)"),
            '-' if next == Some('-') => return bad("it contains a comment (--)"),
            '/' if next == Some('*') => return bad("it contains a comment (/*)"),
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return bad("a ')' closes more than it opened");
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return bad("a '(' is not closed");
    }
    Ok(())
}

/// Asks the server to parse and type the fill as one expression over the table's columns
/// (extended protocol: one statement only; `LIMIT 0` reads no row).
pub async fn check_on_server(
    conn: &mut PgConnection,
    deadline: std::time::Duration,
    table: &QualifiedName,
    fill: &str,
    key_sql_type: &str,
) -> Result<(), FillError> {
    check_shape(fill)?;
    let sql = format!(
        "SELECT ({fill})::{key_sql_type} FROM {} LIMIT 0",
        table.quoted()
    );
    crate::pg::answered(deadline, sqlx::query(&sql).persistent(false).execute(conn))
        .await
        .map(|_| ())
        .map_err(|e| FillError::Rejected {
            fill: fill.to_string(),
            table: table.clone(),
            key_type: key_sql_type.to_string(),
            reason: crate::pg::describe(&e),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_expression_passes() {
        for ok in [
            "\"createdAt\"::date",
            "COALESCE(\"updatedAt\", now())::date",
            "date '2024-01-01'",
            "CASE WHEN source = 'a;b' THEN current_date ELSE '2020-01-01' END",
            "E'2024-01-01\\'s'::text::date",
            "\"odd\"\"name;\"::date",
            "(SELECT max(d) FROM other)",
        ] {
            assert_eq!(check_shape(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn anything_that_could_end_the_expression_is_refused() {
        for bad in [
            "",
            "  ",
            "now()); DROP TABLE pricing_data; SELECT (1",
            "now()::date; DROP TABLE x",
            "now()::date -- trailing",
            "now() /* c */ ::date",
            "1) FROM x UNION SELECT (1",
            "(now()::date",
            "'unterminated",
            "\"unterminated",
            "$$x$$::date",
            "$partkeeper_sync$",
            "$1",
        ] {
            assert!(check_shape(bad).is_err(), "{bad:?} passed");
        }
    }
}
