//! Copy progress for people: a redrawn bar with rows/s and ETA when stderr is a terminal, a log
//! line every few seconds otherwise (CI logs, systemd, `--log-format json`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraw at most this often on a terminal.
const DRAW_EVERY: Duration = Duration::from_millis(150);
/// One log line this often without a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 30;

pub struct Progress {
    tty: bool,
    /// Estimated rows in all (the table's row estimate; it may be off a little either way).
    total: u64,
    done: u64,
    /// Rows done before this process started (a resumed copy), excluded from the rate.
    resumed_at: u64,
    started: Instant,
    last_shown: Option<Instant>,
}

impl Progress {
    pub fn new(total: u64, already_done: u64) -> Progress {
        Progress {
            tty: std::io::stderr().is_terminal(),
            total: total.max(already_done),
            done: already_done,
            resumed_at: already_done,
            started: Instant::now(),
            last_shown: None,
        }
    }

    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        self.total = self.total.max(self.done);
        let every = if self.tty { DRAW_EVERY } else { LOG_EVERY };
        if self.last_shown.is_none_or(|t| t.elapsed() >= every) {
            self.show();
        }
    }

    /// Rows per second since this process started copying.
    pub fn rate(&self) -> f64 {
        let secs = self.started.elapsed().as_secs_f64();
        if secs <= 0.0 {
            0.0
        } else {
            (self.done - self.resumed_at) as f64 / secs
        }
    }

    fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (rate > 0.0)
            .then(|| Duration::from_secs_f64(self.total.saturating_sub(self.done) as f64 / rate))
    }

    fn show(&mut self) {
        self.last_shown = Some(Instant::now());
        let pct = if self.total == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.total as f64
        };
        let eta = self.eta().map(clock).unwrap_or_else(|| "?".into());
        if self.tty {
            let filled = ((pct / 100.0) * BAR_WIDTH as f64) as usize;
            let bar: String = (0..BAR_WIDTH)
                .map(|i| if i < filled { '#' } else { '-' })
                .collect();
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\rcopying [{bar}] {pct:5.1}% {} / ~{} rows  {:.0} rows/s  ETA {eta}   ",
                self.done,
                self.total,
                self.rate()
            );
            let _ = err.flush();
        } else {
            tracing::info!(
                rows = self.done,
                of_about = self.total,
                percent = format!("{pct:.1}"),
                rows_per_sec = self.rate() as u64,
                eta = %eta,
                "copying"
            );
        }
    }

    /// Final state: the bar's line is ended, or one last log line.
    pub fn finish(&mut self) {
        self.total = self.done;
        self.show();
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}

/// `1:02:03` or `2:03`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_like_a_clock() {
        assert_eq!(clock(Duration::from_secs(5)), "0:05");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
