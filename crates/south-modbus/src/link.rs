//! The only handle on a Modbus connection the driver holds: a [`ReadLink`] can send the four
//! plain reads (function codes 1 to 4) and nothing else. tokio-modbus's `Context`, which could
//! also write, is made and kept inside this module and never handed out;
//! `crates/airlock/tests/architecture.rs` checks that no other file of a southbound crate names
//! the protocol library's client handle.

use tokio::net::TcpStream;
use tokio_modbus::Slave;
use tokio_modbus::client::{Context, Reader, tcp};

use airlock_config::Space;

use crate::guard::Guarded;
use crate::plan::ReadRequest;

/// A read answer: registers or bits.
pub enum Data {
    Words(Vec<u16>),
    Bits(Vec<bool>),
}

/// A Modbus TCP connection that can only read.
pub struct ReadLink(Context);

impl ReadLink {
    /// Speaks Modbus TCP to unit `unit` over `stream`, every frame checked by the MBAP guard.
    pub fn attach(stream: TcpStream, unit: u8) -> Self {
        Self(tcp::attach_slave(Guarded::new(stream), Slave(unit)))
    }

    /// Sends one read request.
    pub async fn read(&mut self, req: &ReadRequest) -> tokio_modbus::Result<Data> {
        let (start, count) = (req.start, req.count);
        Ok(match req.space {
            Space::Coil => self.0.read_coils(start, count).await?.map(Data::Bits),
            Space::DiscreteInput => self.0.read_discrete_inputs(start, count).await?.map(Data::Bits),
            Space::InputRegister => self.0.read_input_registers(start, count).await?.map(Data::Words),
            Space::HoldingRegister => self.0.read_holding_registers(start, count).await?.map(Data::Words),
        })
    }
}
