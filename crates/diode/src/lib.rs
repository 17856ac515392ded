//! Diode mode: the plant's data crosses to IT through a one-way link (a data diode: fibre
//! with one transmitter, or a unidirectional gateway) as UDP datagrams, and nothing, not even
//! an acknowledgement, comes back. The OT half is a sink ([`send::DiodeSender`]): it packs
//! outbox records into blocks, encodes each with RaptorQ (RFC 6330) so that any slightly more
//! than the block's own size in symbols rebuild it, sends the datagrams paced to a byte rate,
//! and says every `heartbeat_s` what it has sent and how the plant side is. The IT half
//! ([`receive::Receiver`], `airlock receive`) decodes blocks ([`assemble::Assembler`]), drops
//! duplicates by record id, names precisely the ids that never arrived (`diode_gap`), says
//! when heartbeats stop (`diode_silent`), and writes everything into its own outbox, whose
//! sinks send the same records under the same ids as the OT side would have. The two halves
//! share nothing but the datagram format ([`wire`]). The sending code has no receive call and
//! the receiving code no send call (`tests/architecture.rs`).

pub mod assemble;
#[doc(hidden)]
pub mod fuzzing;
pub mod receive;
pub mod send;
pub mod wire;
