//! The status page's browser driver: `tests/browser/status_page.mjs` in headless Chromium.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::bounded;

/// The browser script, run with node; fails naming what is missing when node, the script's
/// npm packages or chromium are not installed.
pub fn browser(args: &[&str]) -> std::process::Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: `npm ci --prefix tests/browser` (./scripts/test does it)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (./scripts/test does it), or set CHROMIUM"
    );
    let mut command = Command::new("node");
    command
        .arg(dir.join("status_page.mjs"))
        .args(args)
        .env("CHROMIUM", &chromium);
    bounded(
        &mut command,
        Duration::from_secs(180),
        "the status page in chromium",
    )
}
