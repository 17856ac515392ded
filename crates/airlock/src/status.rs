//! `airlock status --data DIR`: the health of a running gateway (devices, sinks, store), read
//! from the status file it writes atomically every second into its data folder, for sites that
//! keep the web server off. It opens no port and touches nothing but that file. Exit codes: 0
//! when the gateway is running (the file is fresh), 1 when it stopped, is not running (the file
//! is older than [`STALE_AFTER`]) or the file cannot be read.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use airlock_model::Timestamp;
use serde_json::Value;

use crate::gateway::{STATUS_EVERY, STATUS_FILE};

/// A status file older than this means the gateway that wrote it is gone (or hung).
pub const STALE_AFTER: Duration = Duration::from_secs(5);

#[derive(clap::Args)]
pub struct StatusArgs {
    /// The gateway's data folder (its `[store] data_dir`).
    #[arg(long = "data")]
    pub data: PathBuf,
    /// Print the status file as it is (JSON) instead of a summary.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &StatusArgs) -> ExitCode {
    match read(&args.data) {
        Ok((status, age)) => {
            if args.json {
                crate::print_out(&format!("{status:#}\n"));
            } else {
                crate::print_out(&summary(&status, age));
            }
            let running = status["running"].as_bool().unwrap_or(false);
            if running && age <= STALE_AFTER { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("airlock: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The status file of `data` and how old it is.
fn read(data: &Path) -> Result<(Value, Duration), String> {
    let path = data.join(STATUS_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "read {}: {e} (is this a gateway's data folder? a gateway writes it every {STATUS_EVERY:?})",
            path.display()
        )
    })?;
    let status: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not a status file: {e}", path.display()))?;
    let written =
        status["written_unix_ms"].as_i64().ok_or_else(|| format!("{}: no written_unix_ms", path.display()))?;
    let now_ms = Timestamp::now().0 / 1_000_000;
    let age = Duration::from_millis(u64::try_from(now_ms.saturating_sub(written)).unwrap_or(0));
    Ok((status, age))
}

/// What a person reads: one line for the gateway, one per device and sink, one for the store.
fn summary(s: &Value, age: Duration) -> String {
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let state = match (s["running"].as_bool().unwrap_or(false), age <= STALE_AFTER) {
        (true, true) => "running".to_owned(),
        (true, false) => {
            format!("NOT RUNNING (its status file is {}s old: it stopped without a word, or hangs)", age.as_secs())
        }
        (false, _) => format!("stopped at {}", text(&s["written"])),
    };
    let mut out = format!(
        "gateway {}: {state} (pid {}, up {}s; status written {:.1}s ago)\n",
        text(&s["gateway"]),
        num(&s["pid"]),
        num(&s["uptime_s"]),
        age.as_secs_f64()
    );
    out.push_str("devices:\n");
    for d in s["devices"].as_array().into_iter().flatten() {
        let error = text(&d["last_error"]);
        out.push_str(&format!(
            "  {:<16} {:<10} {:>8.1} samples/s  polls {}  errors {}{}\n",
            text(&d["name"]),
            text(&d["state"]),
            d["samples_per_s"].as_f64().unwrap_or(0.0),
            num(&d["polls"]),
            num(&d["comm_errors"]) + num(&d["exceptions"]),
            if error.is_empty() { String::new() } else { format!("  last error: {error}") }
        ));
    }
    out.push_str("sinks:\n");
    for k in s["sinks"].as_array().into_iter().flatten() {
        let problem = text(&k["problem"]);
        out.push_str(&format!(
            "  {:<16} {:<10} queued {}  delivered {}  failures {}  lag {:.1}s{}\n",
            text(&k["name"]),
            text(&k["kind"]),
            num(&k["queued"]),
            num(&k["delivered"]),
            num(&k["failures"]),
            k["lag_s"].as_f64().unwrap_or(0.0),
            if problem.is_empty() { String::new() } else { format!("  problem: {problem}") }
        ));
    }
    let st = &s["store"];
    out.push_str(&format!(
        "store: {} samples stored, outbox {} of {} bytes ({} dropped), historian {} of {} bytes, {} store errors\n",
        num(&st["samples_stored"]),
        num(&st["outbox_bytes"]),
        num(&st["outbox_bytes_max"]),
        num(&st["outbox_dropped"]),
        num(&st["historian_bytes"]),
        num(&st["historian_bytes_max"]),
        num(&st["store_errors"])
    ));
    out
}
