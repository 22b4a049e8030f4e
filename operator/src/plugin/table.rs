//! kubectl-style tables: left-aligned columns separated by three spaces.

pub type Row = Vec<String>;

pub fn render(headers: &[&str], rows: &[Row]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let out = render(
            &["NAME", "READY"],
            &[
                vec!["claude".into(), "True".into()],
                vec!["q".into(), "False".into()],
            ],
        );
        assert_eq!(out, "NAME     READY\nclaude   True\nq        False\n");
    }

    #[test]
    fn headers_only_when_no_rows() {
        assert_eq!(render(&["A", "B"], &[]), "A   B\n");
    }
}
