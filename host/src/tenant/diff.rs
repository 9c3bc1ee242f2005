//! A line diff for golden files: what `ferry test --expect` shows when the report
//! changed.

/// Most lines compared with a full longest-common-subsequence table (its size is
/// the product of both sides); longer files show their first difference only.
const MAX_TABLE: usize = 4_000_000;

/// The differences between `expected` and `actual`, one line each: `-` for a line
/// only expected, `+` for a line only in the actual text, and `@@ line N` before
/// each run of changes (N counts lines of `expected`).
pub(crate) fn lines(expected: &str, actual: &str) -> String {
    let old: Vec<&str> = expected.lines().collect();
    let new: Vec<&str> = actual.lines().collect();
    if old.len().saturating_mul(new.len()) > MAX_TABLE {
        return first_difference(&old, &new);
    }
    // lcs[i][j]: the longest common subsequence of old[i..] and new[j..].
    let width = new.len() + 1;
    let mut lcs = vec![0u32; (old.len() + 1) * width];
    for i in (0..old.len()).rev() {
        for j in (0..new.len()).rev() {
            lcs[i * width + j] = if old[i] == new[j] {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let (mut i, mut j, mut out, mut in_change) = (0, 0, String::new(), false);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            (i, j, in_change) = (i + 1, j + 1, false);
            continue;
        }
        if !in_change {
            out += &format!("@@ line {}\n", i + 1);
            in_change = true;
        }
        if i < old.len() && (j == new.len() || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1]) {
            out += &format!("-{}\n", old[i]);
            i += 1;
        } else {
            out += &format!("+{}\n", new[j]);
            j += 1;
        }
    }
    if out.is_empty() && expected != actual {
        out += "(the files differ only in line endings or a final newline)\n";
    }
    out
}

fn first_difference(old: &[&str], new: &[&str]) -> String {
    let at = old.iter().zip(new).position(|(a, b)| a != b).unwrap_or(old.len().min(new.len()));
    let mut out = format!("@@ line {} (first difference; the files are too long to compare in full)\n", at + 1);
    if let Some(line) = old.get(at) {
        out += &format!("-{line}\n");
    }
    if let Some(line) = new.get(at) {
        out += &format!("+{line}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_changed_added_and_removed_lines() {
        let expected = "a\nb\nc\nd\n";
        let actual = "a\nB\nc\nd\ne\n";
        assert_eq!(lines(expected, actual), "@@ line 2\n-b\n+B\n@@ line 5\n+e\n");
        assert_eq!(lines("a\nb\n", "b\n"), "@@ line 1\n-a\n");
        assert_eq!(lines("same\n", "same\n"), "");
        assert_eq!(lines("a\n", "a"), "(the files differ only in line endings or a final newline)\n");
    }

    #[test]
    fn long_files_show_their_first_difference() {
        let old: String = (0..3000).map(|i| format!("{i}\n")).collect();
        let new = old.replacen("1500\n", "x\n", 1);
        assert_eq!(
            lines(&old, &new),
            "@@ line 1501 (first difference; the files are too long to compare in full)\n-1500\n+x\n"
        );
    }
}
