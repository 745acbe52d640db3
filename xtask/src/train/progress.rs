use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for one epoch (hidden when stderr is not a terminal, e.g. in CI logs).
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
