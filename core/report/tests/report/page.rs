//! The page as a browser draws it: headless Chromium takes a screenshot, which must show more than
//! a blank page. Where Chromium is not installed the test says so and passes: nothing is installed
//! for it. `NESTFORM_REPORT_KEEP=DIR` keeps the report and `screenshot.png` in `DIR/page` to look at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::fixture;

/// How long Chromium gets to draw the page.
const LIMIT: Duration = Duration::from_secs(120);

/// `chromium` on `PATH` (Debian's package installs it so).
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("chromium")).find(|p| p.is_file())
}

/// A line that shows even when the test's output is captured.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Screenshots `page` at `width` by `height` into `png`.
fn screenshot(chromium: &Path, page: &Path, png: &Path, profile: &Path, (width, height): (u32, u32)) {
    let mut child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            &format!("--user-data-dir={}", profile.display()),
            &format!("--screenshot={}", png.display()),
            &format!("--window-size={width},{height}"),
            &format!("file://{}", page.display()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "chromium exited with {status}");
            return;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not draw the page in {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The PNG's pixels as RGB(A) rows, with its width and the bytes per pixel.
fn pixels(png: &Path) -> (Vec<u8>, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (buf, info.color_type.samples())
}

#[test]
fn chromium_draws_the_page_with_its_charts() {
    let Some(chromium) = chromium() else {
        // `tests/run.sh` installs chromium and asks for it: there the page must be drawn.
        assert!(
            std::env::var_os("NESTFORM_REQUIRE_CHROMIUM").is_none(),
            "NESTFORM_REQUIRE_CHROMIUM is set, but `chromium` is not on PATH"
        );
        say("skipped chromium_draws_the_page_with_its_charts: `chromium` is not on PATH (Debian: apt-get install chromium)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = super::out_dir(&tmp, "page");
    let written = nestform_report::write(&fixture::state(), &dir).unwrap();
    let page = written.index.canonicalize().unwrap();
    let png = dir.join("screenshot.png");
    screenshot(&chromium, &page, &png, &tmp.path().join("profile"), (1200, 1600));

    let (data, channels) = pixels(&png);
    let px: Vec<&[u8]> = data.chunks(channels).map(|p| &p[..3.min(channels)]).collect();
    assert!(px.len() >= 1200 * 1600, "{} pixels", px.len());
    let background = px[0];
    let drawn = px.iter().filter(|p| **p != background).count();
    let colours: std::collections::BTreeSet<&[u8]> = px.iter().copied().collect();
    // Text, tables and bars: a blank or failed page is one colour, or nearly.
    assert!(drawn * 100 > px.len() * 3, "only {drawn} of {} pixels differ from the background", px.len());
    assert!(colours.len() > 50, "only {} colours", colours.len());
    // The charts are drawn: the bars of the emulated levels are orange.
    let orange = px.iter().filter(|p| **p == [0xe0, 0x7b, 0x39]).count();
    assert!(orange > 2000, "only {orange} pixels of the bars' orange");
}
