//! SQL errors of compiled models pointed back into the user's files.
//!
//! The engine reports a position in the compiled SQL (a syntax error's `Line: 3, Column: 5`,
//! or the span of an unknown column). The compiled text is the model's Jinja rendered, so
//! the position is mapped back to the model file by matching the compiled line against the
//! file's lines with their Jinja tags as wildcards.

use strata_models::Node;

/// The message of an engine error raised by a node's compiled SQL, pointed at the model
/// file's line and column (when the position maps back), with that line shown under it and
/// the compiled file's position after it.
///
/// `sql` is the executed text as written to `compiled_path` (the path shown to the user).
pub(crate) fn locate(n: &Node, sql: &str, compiled_path: &str, e: anyhow::Error) -> anyhow::Error {
    let position = e
        .chain()
        .find_map(|c| c.downcast_ref::<strata_engine::Error>())
        .and_then(strata_engine::Error::location);
    let Some((line, column)) = position else {
        return e.context(format!(
            "{}: compiled SQL at {compiled_path}",
            n.original_file_path
        ));
    };
    let compiled_line = sql.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let here = format!("{compiled_path}:{line}:{column}");
    let error = crate::render_error(&e);
    let message = match map_line(&n.raw_code, compiled_line, line) {
        Some(raw_index) => {
            let raw_line = n.raw_code.lines().nth(raw_index).unwrap_or("");
            let raw_column = map_column(raw_line, compiled_line, column);
            let file_line = raw_index + n.raw_start.0;
            let file_column = if raw_index == 0 {
                raw_column + n.raw_start.1 - 1
            } else {
                raw_column
            };
            format!(
                "{}:{file_line}:{file_column}: {error}\n{}\n(compiled SQL: {here})",
                n.original_file_path,
                excerpt(file_line, raw_line, raw_column),
            )
        }
        None => format!(
            "{}: compiled SQL at {here}: {error}\n{}",
            n.original_file_path,
            excerpt(line, compiled_line, column)
        ),
    };
    anyhow::Error::msg(message)
}

/// `  12 | select amout` with a caret under column `column`.
fn excerpt(line: usize, text: &str, column: usize) -> String {
    let gutter = line.to_string();
    let pad: String = text
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "  {gutter} | {text}\n  {} | {pad}^",
        " ".repeat(gutter.len())
    )
}

/// The 0-based line of `raw` (a model's Jinja source) that rendered into `compiled_line`
/// (line `compiled_at` of the compiled SQL, 1-based): every literal piece of the raw line,
/// between its Jinja tags, must appear in order in the compiled line. The match with the
/// most literal text wins; ties go to the line nearest `compiled_at`.
fn map_line(raw: &str, compiled_line: &str, compiled_at: usize) -> Option<usize> {
    let target = compiled_line.trim();
    if target.is_empty() {
        return None;
    }
    let mut best: Option<(usize, usize, usize)> = None; // (score, distance, index)
    for (i, raw_line) in raw.lines().enumerate() {
        let pieces = literal_pieces(raw_line.trim());
        let score: usize = pieces.iter().map(|p| p.trim().len()).sum();
        if score < 3 || !matches_in_order(&pieces, target) {
            continue;
        }
        let distance = (i + 1).abs_diff(compiled_at);
        let better = match best {
            None => true,
            Some((s, d, _)) => score > s || (score == s && distance < d),
        };
        if better {
            best = Some((score, distance, i));
        }
    }
    best.map(|(_, _, i)| i)
}

/// The text of a line outside `{{ … }}`, `{% … %}` and `{# … #}` tags.
fn literal_pieces(line: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = line;
    loop {
        let open = ["{{", "{%", "{#"]
            .iter()
            .filter_map(|t| rest.find(t).map(|i| (i, *t)))
            .min();
        let Some((start, tag)) = open else {
            pieces.push(rest);
            break;
        };
        pieces.push(&rest[..start]);
        let close = match tag {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        match rest[start..].find(close) {
            Some(end) => rest = &rest[start + end + close.len()..],
            // A tag that spans lines: the rest of this line is Jinja.
            None => break,
        }
    }
    pieces.retain(|p| !p.trim().is_empty());
    pieces
}

/// Whether the pieces occur in `text` in order; the first must start it and the last end
/// it when the raw line starts or ends with literal text.
fn matches_in_order(pieces: &[&str], text: &str) -> bool {
    let mut at = 0;
    for p in pieces {
        let p = p.trim();
        match text[at..].find(p) {
            Some(i) => at += i + p.len(),
            None => return false,
        }
    }
    true
}

/// The 1-based column in `raw_line` of the token at `column` of `compiled_line`: the same
/// text searched for in the raw line, else the compiled column.
fn map_column(raw_line: &str, compiled_line: &str, column: usize) -> usize {
    let token: String = compiled_line
        .chars()
        .skip(column.saturating_sub(1))
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '.' || *c == '"')
        .collect();
    if token.is_empty() {
        return column;
    }
    let found: Vec<usize> = raw_line.match_indices(&token).map(|(i, _)| i).collect();
    match found.as_slice() {
        [only] => raw_line[..*only].chars().count() + 1,
        _ => column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "{{ config(materialized='table') }}\n\
                       select\n    o.order_id,\n    sum(o.amout) as total\n\
                       from {{ ref('stg_orders') }} o\n\
                       where o.status != '{{ var(\"skip\") }}'\ngroup by 1\n";

    #[test]
    fn compiled_lines_map_back_through_jinja() {
        assert_eq!(map_line(RAW, "    sum(o.amout) as total", 5), Some(3));
        assert_eq!(map_line(RAW, "from analytics.stg_orders o", 6), Some(4));
        assert_eq!(map_line(RAW, "where o.status != 'returned'", 7), Some(5));
        assert_eq!(map_line(RAW, "group by 1", 8), Some(6));
        assert_eq!(map_line(RAW, "limit 10", 9), None);
        assert_eq!(map_line(RAW, "", 1), None);
    }

    #[test]
    fn columns_follow_the_token() {
        let raw = "from {{ ref('stg_orders') }} o join x on o.idd = x.id";
        let compiled = "from analytics.stg_orders o join x on o.idd = x.id";
        let col = compiled.find("o.idd").unwrap() + 1;
        assert_eq!(
            map_column(raw, compiled, col),
            raw.find("o.idd").unwrap() + 1
        );
    }

    #[test]
    fn excerpts_put_a_caret_under_the_column() {
        assert_eq!(
            excerpt(12, "    sum(o.amout)", 9),
            "  12 |     sum(o.amout)\n     |         ^"
        );
    }
}
