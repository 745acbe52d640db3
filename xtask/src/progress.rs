//! Progress for long loops. indicatif draws nothing where stderr is not a terminal (a log file,
//! CI, `nohup`), which left `evaluate`'s GB and GL, tens of minutes on a CPU, silent until they
//! ended; [`Work`] writes a plain line there instead.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for one epoch (hidden when stderr is not a terminal; the training loops log
/// their own lines every `log_every` steps).
pub fn epoch_bar(epoch: usize, epochs: usize, steps: usize, done: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix} [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed}<{eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {}/{epochs}", epoch + 1));
    bar.set_position(done as u64);
    bar
}

/// How often a plain line is written at most when little work is done: every minute.
const PLAIN_EVERY: Duration = Duration::from_secs(60);

/// Progress over `len` items: a bar on a terminal; elsewhere a line such as
/// `gb: 40/100 inputs after 251 s, about 377 s left` at every tenth of the work, at least once a
/// minute while items keep finishing, and at the end.
pub struct Work {
    bar: ProgressBar,
    label: String,
    unit: String,
    plain: bool,
    last_line: Instant,
    last_line_pos: u64,
}

impl Work {
    pub fn new(label: &str, len: usize, unit: &str) -> Self {
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{msg}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{elapsed}}<{{eta}})"
            ))
            .expect("valid template"),
        );
        bar.set_message(label.to_string());
        // indicatif keeps the position and the clock even where it draws nothing.
        let plain = bar.is_hidden();
        Work {
            bar,
            label: label.into(),
            unit: unit.into(),
            plain,
            last_line: Instant::now(),
            last_line_pos: 0,
        }
    }

    /// `n` more items done.
    pub fn inc(&mut self, n: usize) {
        let len = self.len();
        let pos = (self.bar.position() + n as u64).min(len);
        self.bar.set_position(pos);
        if self.plain && due(pos, self.last_line_pos, len, self.last_line.elapsed()) {
            eprintln!("{}", self.line(self.bar.elapsed()));
            self.last_line = Instant::now();
            self.last_line_pos = pos;
        }
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }

    fn len(&self) -> u64 {
        self.bar.length().unwrap_or(0)
    }

    fn line(&self, elapsed: Duration) -> String {
        let s = elapsed.as_secs_f64();
        let (pos, len) = (self.bar.position(), self.len());
        let head = format!("{}: {pos}/{len} {} after {s:.0} s", self.label, self.unit);
        match (pos, pos < len) {
            (0, _) | (_, false) => head,
            (p, true) => {
                let left = s * (len - p) as f64 / p as f64;
                format!("{head}, about {left:.0} s left")
            }
        }
    }
}

/// Whether a plain line is due at `pos` of `len`, the last one having been written at
/// `last_pos`, `since` ago: at the end, after a tenth of the work, or after a minute.
fn due(pos: u64, last_pos: u64, len: u64, since: Duration) -> bool {
    let tenth = len.div_ceil(10).max(1);
    pos > last_pos && (pos == len || pos - last_pos >= tenth || since >= PLAIN_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_come_every_tenth_every_minute_and_at_the_end() {
        let short = Duration::from_secs(5);
        assert!(!due(9, 0, 100, short), "under a tenth, under a minute");
        assert!(due(10, 0, 100, short), "a tenth");
        assert!(!due(19, 10, 100, short));
        assert!(due(11, 10, 100, PLAIN_EVERY), "a minute, even for one item");
        assert!(
            !due(10, 10, 100, PLAIN_EVERY),
            "nothing new, nothing written"
        );
        assert!(due(100, 95, 100, short), "the end");
        assert!(due(1, 0, 3, short), "a tenth of 3 rounds up to one item");
    }

    #[test]
    fn the_line_names_the_work_and_estimates_what_is_left() {
        let mut w = Work::new("gb", 100, "inputs");
        w.plain = false;
        w.inc(40);
        assert_eq!(
            w.line(Duration::from_secs(200)),
            "gb: 40/100 inputs after 200 s, about 300 s left"
        );
        w.inc(100);
        assert_eq!(w.bar.position(), 100, "clamped to the length");
        assert_eq!(
            w.line(Duration::from_secs(500)),
            "gb: 100/100 inputs after 500 s"
        );
        w.finish();
    }
}
