//! A spinner on stderr for long scans, shown only when stderr is a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use regfsck_core::runner::Progress;

#[derive(Debug)]
pub struct Spinner {
    bar: ProgressBar,
}

impl Spinner {
    /// `None` unless stderr is a terminal (indicatif also hides itself otherwise).
    pub fn on_terminal() -> Option<Self> {
        use std::io::IsTerminal;
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(Self { bar })
    }

    /// Runs `f` (which writes to the terminal) with the spinner hidden.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Spinner {
    fn registry(&self, name: &str, index: usize, total: usize) {
        self.bar
            .set_message(format!("scanning {name} ({}/{total})", index + 1));
    }

    fn fixing(&self, done: usize, total: usize) {
        self.bar.set_message(format!("fixing {done}/{total}"));
    }
}
