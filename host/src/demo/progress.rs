//! The demo's progress line. On a terminal it is one line redrawn in place; into a
//! file or a pipe (CI, `ferry demo > demo.log`) it is a plain line every few
//! seconds, never a stream of carriage returns.

use std::io::{IsTerminal as _, Write};
use std::time::{Duration, Instant};

/// How often a progress line is written when the output is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// A progress display on `out`.
pub struct Progress<W: Write> {
    out: W,
    terminal: bool,
    /// When the last plain line was written.
    last_plain: Option<Instant>,
    /// Whether a redrawn line is on screen (and needs a newline before other output).
    drawn: bool,
}

impl Progress<std::io::Stdout> {
    /// Progress on stdout, redrawn in place only if stdout is a terminal.
    pub fn stdout() -> Self {
        let out = std::io::stdout();
        let terminal = out.is_terminal();
        Self::new(out, terminal)
    }
}

impl<W: Write> Progress<W> {
    /// Progress on `out`; `terminal` says whether it can be redrawn in place.
    pub fn new(out: W, terminal: bool) -> Self {
        Self { out, terminal, last_plain: None, drawn: false }
    }

    /// Shows the current state.
    pub fn show(&mut self, line: &str) {
        self.show_at(line, Instant::now());
    }

    /// Shows the current state as of `now`: redrawn on a terminal; otherwise written
    /// if the last line is [`PLAIN_EVERY`] old (or there was none).
    pub fn show_at(&mut self, line: &str, now: Instant) {
        if self.terminal {
            // Carriage return, the line, then erase whatever a longer line left.
            let _ = write!(self.out, "\r{line}\x1b[K");
            self.drawn = true;
        } else if self.last_plain.is_none_or(|at| now.saturating_duration_since(at) >= PLAIN_EVERY) {
            let _ = writeln!(self.out, "{line}");
            self.last_plain = Some(now);
        }
        let _ = self.out.flush();
    }

    /// Ends the display with the final state, always written, on a line of its own.
    pub fn finish(&mut self, line: &str) {
        if self.terminal {
            let _ = writeln!(self.out, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(self.out, "{line}");
        }
        self.drawn = false;
        let _ = self.out.flush();
    }

    /// Leaves the redrawn line on screen so that other output starts on a new line.
    pub fn interrupt(&mut self) {
        if self.drawn {
            let _ = writeln!(self.out);
            self.drawn = false;
            let _ = self.out.flush();
        }
    }

    /// What was written (for tests).
    #[cfg(test)]
    fn written(&self) -> &W {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(progress: &Progress<Vec<u8>>) -> String {
        String::from_utf8(progress.written().clone()).unwrap()
    }

    #[test]
    fn a_terminal_gets_one_line_redrawn_in_place() {
        let mut progress = Progress::new(Vec::new(), true);
        let start = Instant::now();
        progress.show_at("1/3", start);
        progress.show_at("2/3", start);
        progress.finish("3/3 done");
        assert_eq!(text(&progress), "\r1/3\x1b[K\r2/3\x1b[K\r3/3 done\x1b[K\n");
    }

    #[test]
    fn a_file_gets_a_plain_line_every_few_seconds() {
        let mut progress = Progress::new(Vec::new(), false);
        let start = Instant::now();
        progress.show_at("a", start);
        progress.show_at("b", start + Duration::from_secs(1));
        progress.show_at("c", start + PLAIN_EVERY);
        progress.show_at("d", start + PLAIN_EVERY + Duration::from_secs(1));
        progress.finish("done");
        let written = text(&progress);
        assert_eq!(written, "a\nc\ndone\n");
        assert!(!written.contains('\r') && !written.contains('\x1b'));
    }
}
