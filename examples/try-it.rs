//! Drives headless Chromium through the try-it LMS of `labpool serve --dev`
//! as a newcomer would: open the page, choose a student and a course, click
//! Launch, wait for the terminal, type `echo` of a random marker and see its
//! output on the screen. Prints the time from the Launch click to each step.
//!
//! ```sh
//! cargo run --release --example try-it -- http://127.0.0.1:8080/dev/ [--course intro-shell] [--student ada]
//! ```
//!
//! `scripts/check-examples` runs it once the example pools are warm. Needs
//! chromium and chromium-driver (scripts/setup installs them). Exits non-zero
//! when any step fails or times out.

#[path = "../tests/it/browser.rs"]
#[allow(dead_code)]
mod browser;

use std::time::{Duration, Instant};

use clap::Parser;
use fantoccini::Locator;
use serde_json::{Value, json};

use browser::Chrome;

#[derive(Debug, Parser)]
#[command(about = "Launch a lab through labpool's try-it LMS in headless Chromium")]
struct Args {
    /// The try-it page, e.g. http://127.0.0.1:8080/dev/
    url: String,
    /// The course to launch (default: the one the page preselects, the
    /// first with a warm VM).
    #[arg(long)]
    course: Option<String>,
    /// The made-up student (ada, alan, grace, katherine).
    #[arg(long, default_value = "ada")]
    student: String,
    /// How long each step may take, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
}

async fn click(chrome: &Chrome, css: &str) -> anyhow::Result<()> {
    let element = chrome
        .client()
        .find(Locator::Css(css))
        .await
        .map_err(|e| anyhow::anyhow!("the page has no {css}: {e}"))?;
    element
        .click()
        .await
        .map_err(|e| anyhow::anyhow!("clicking {css}: {e}"))?;
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let limit = Duration::from_secs(args.timeout);
    let chrome = Chrome::start().await;
    chrome.goto(&args.url).await;
    chrome
        .wait_text("#banner", "Development only", Duration::from_secs(10))
        .await;
    if let Some(course) = &args.course {
        click(&chrome, &format!("#course-{course}")).await?;
    }
    let checked = "return document.querySelector('input[name=course]:checked')?.value ?? null";
    let course = match chrome.client().execute(checked, vec![]).await? {
        Value::String(course) => course,
        _ => anyhow::bail!("the try-it page at {} offers no course", args.url),
    };
    click(&chrome, &format!("#student-{}", args.student)).await?;

    let clicked = Instant::now();
    click(&chrome, "#launch").await?;
    chrome
        .wait_js(
            "return document.body.dataset.state || null",
            json!("connected"),
            limit,
        )
        .await;
    let connected = clicked.elapsed();
    let session = chrome.client().current_url().await?;
    // A prompt (`#` on the serial console, `$` over SSH) before typing.
    chrome
        .wait_js(
            "return /[#$]/.test(document.querySelector('.xterm-rows')?.textContent ?? '')",
            json!(true),
            limit,
        )
        .await;
    let prompt = clicked.elapsed();
    // The typed line shows `try''it-…`; only the command's output shows `tryit-…`.
    let marker = format!("{:016x}", rand::random::<u64>());
    chrome
        .type_keys(
            ".xterm-helper-textarea",
            &format!("echo try''it-{marker}\n"),
        )
        .await;
    chrome
        .wait_text(".xterm-rows", &format!("tryit-{marker}"), limit)
        .await;
    let output = clicked.elapsed();
    chrome.close().await;

    println!(
        "try-it: {course} as {student} (session {path}): Launch click → terminal connected {c}, \
         prompt on screen {p}, command output on screen {o}",
        student = args.student,
        path = session.path(),
        c = secs(connected),
        p = secs(prompt),
        o = secs(output),
    );
    Ok(())
}
