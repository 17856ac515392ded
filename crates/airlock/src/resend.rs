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
            let Some(named) = config.sinks.iter().find(|s| s.name == name) else {
                anyhow::bail!("{}: no sink named {name:?}", file.display());
            };
            // A sink that acknowledges (MQTT, Kafka, HTTP, a file) sends again by itself what
            // its receiver did not take; only a diode's receiver cannot say so.
            if !matches!(named.kind, SinkKind::Diode(_)) {
                anyhow::bail!(
                    "{}: sink {name:?} is a {} sink, not a diode: it sends again by itself what its receiver \
                     did not acknowledge",
                    file.display(),
                    named.kind.name()
                );
            }
            name
        }
        (None, [one]) => one,
        (None, []) => anyhow::bail!("{}: has no diode sink: `diode resend` asks a diode sink", file.display()),
        (None, _) => {
            anyhow::bail!("{}: more than one diode sink ({}); name one with --sink", file.display(), diodes.join(", "))
        }
    };
    let dir = config.store.data_dir.join("outbox");
    airlock_store::request_rewind(&dir, sink, from)?;
    crate::print_out(&format!(
        "sink {sink} will send again from {from}, as far as the outbox in {} still holds it (within a second if the gateway runs, else at its start)\n",
        dir.display()
    ));
    Ok(())
}
