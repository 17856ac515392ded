//! `airlock diode resend FILE --from ID|TIME`: on the OT side, ask the diode sink to send
//! again from a record or a time. A local command: it writes a request beside the sink's
//! cursor in the data folder, which the running gateway takes within a second (or at its next
//! start). Nothing is asked of the network, and the IT side cannot ask for it.

use std::path::Path;

use airlock_config::SinkKind;
use airlock_store::RewindFrom;

pub fn run(file: &Path, from: &str, sink: Option<&str>) -> anyhow::Result<()> {
    let config = airlock_config::load(file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let from = RewindFrom::parse(from).ok_or_else(|| {
        anyhow::anyhow!("--from {from:?} is neither a record id (e.g. r1200, e17) nor an RFC 3339 time")
    })?;
    let diodes: Vec<&str> =
        config.sinks.iter().filter(|s| matches!(s.kind, SinkKind::Diode(_))).map(|s| s.name.as_str()).collect();
    let sink = match (sink, diodes.as_slice()) {
        (Some(name), _) => {
            anyhow::ensure!(config.sinks.iter().any(|s| s.name == name), "{}: no sink named {name:?}", file.display());
            name
        }
        (None, [one]) => one,
        (None, []) => anyhow::bail!("{}: no diode sink; name the sink with --sink", file.display()),
        (None, _) => {
            anyhow::bail!("{}: more than one diode sink ({}); name one with --sink", file.display(), diodes.join(", "))
        }
    };
    let dir = config.store.data_dir.join("outbox");
    airlock_store::request_rewind(&dir, sink, from)?;
    println!(
        "sink {sink} will send again from {from}, as far as the outbox in {} still holds it (within a second if the gateway runs, else at its start)",
        dir.display()
    );
    Ok(())
}
