//! The validated shape of a Modbus TCP device and its tags.

use airlock_model::AssetPath;

/// The four Modbus data spaces. Coils and discrete inputs hold bits; registers hold 16-bit words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Space {
    Coil,
    DiscreteInput,
    InputRegister,
    HoldingRegister,
}

impl Space {
    pub const ALL: [(&'static str, Space); 4] = [
        ("coil", Space::Coil),
        ("discrete_input", Space::DiscreteInput),
        ("input_register", Space::InputRegister),
        ("holding_register", Space::HoldingRegister),
    ];

    pub fn is_bit(self) -> bool {
        matches!(self, Space::Coil | Space::DiscreteInput)
    }

    /// The most items one read request may ask for (Modbus application protocol v1.1b3, 6.1-6.4).
    pub fn max_per_request(self) -> u16 {
        if self.is_bit() { 2000 } else { 125 }
    }

    pub fn name(self) -> &'static str {
        match self {
            Space::Coil => "coil",
            Space::DiscreteInput => "discrete_input",
            Space::InputRegister => "input_register",
            Space::HoldingRegister => "holding_register",
        }
    }
}

/// How a tag's bits are laid out in the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
    /// Fixed-length ASCII text, two characters per register; trailing NULs and spaces are trimmed.
    String {
        length_chars: u16,
    },
    /// A block of signed 16-bit samples taken at `rate_hz` (a vibration waveform), one per
    /// register, scaled like numbers. Longer than one request allows, it is read in parts.
    Waveform {
        samples: u16,
        rate_hz: u32,
    },
}

impl DataType {
    pub const NAMES: [&'static str; 11] =
        ["bool", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "string", "waveform"];

    /// Parses a type name; `string` needs its length, given separately.
    pub fn parse(name: &str, length_chars: u16) -> Option<Self> {
        Some(match name {
            "bool" => DataType::Bool,
            "u16" => DataType::U16,
            "i16" => DataType::I16,
            "u32" => DataType::U32,
            "i32" => DataType::I32,
            "u64" => DataType::U64,
            "i64" => DataType::I64,
            "f32" => DataType::F32,
            "f64" => DataType::F64,
            "string" => DataType::String { length_chars },
            _ => return None,
        })
    }

    /// Whether values of this type are single numbers (not bool, text or waveform).
    pub fn is_number(self) -> bool {
        !matches!(self, DataType::Bool | DataType::String { .. } | DataType::Waveform { .. })
    }

    /// Registers this type takes (a bool in a register takes that one register).
    pub fn registers(self) -> u16 {
        match self {
            DataType::Bool | DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 | DataType::F64 => 4,
            DataType::String { length_chars } => length_chars.div_ceil(2),
            DataType::Waveform { samples, .. } => samples,
        }
    }
}

/// Byte and word order of multi-byte values, named by where bytes A (most significant) to D land
/// in register order. `abcd` is the Modbus standard (big-endian words, big-endian bytes).
/// For 16-bit values only the byte order within the word matters; for 64-bit values "least
/// significant word first" reverses all four words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WordOrder {
    /// Big-endian bytes, most significant word first (Modbus standard).
    #[default]
    Abcd,
    /// Bytes swapped within each word, most significant word first.
    Badc,
    /// Big-endian bytes, least significant word first ("word swap", common on many PLCs).
    Cdab,
    /// Little-endian: least significant word first, bytes swapped.
    Dcba,
}

impl WordOrder {
    pub const ALL: [(&'static str, WordOrder); 4] =
        [("abcd", WordOrder::Abcd), ("badc", WordOrder::Badc), ("cdab", WordOrder::Cdab), ("dcba", WordOrder::Dcba)];

    pub fn swaps_bytes(self) -> bool {
        matches!(self, WordOrder::Badc | WordOrder::Dcba)
    }

    pub fn swaps_words(self) -> bool {
        matches!(self, WordOrder::Cdab | WordOrder::Dcba)
    }
}

/// A Modbus TCP device: where it is and what to read from it.
#[derive(Debug, Clone)]
pub struct ModbusDevice {
    /// `host:port`, resolved on every connect.
    pub address: String,
    pub unit_id: u8,
    /// Unconfigured registers the planner may read to join two tags into one request.
    pub max_gap_registers: u16,
    /// Unconfigured bits the planner may read to join two tags into one request.
    pub max_gap_bits: u16,
    /// Requests sent before the first's answer came, at most (1 to 16; 1, the default: one
    /// request in flight).
    pub requests_in_flight_max: u8,
    pub tags: Vec<ModbusTag>,
}

/// Where and how one tag is read from a Modbus device (its edge settings are on [`crate::Tag`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModbusTag {
    pub name: String,
    /// The tag's place: the device path with the tag name appended.
    pub path: AssetPath,
    pub space: Space,
    /// The protocol (0-based) address of the first register or bit.
    pub address: u16,
    pub data_type: DataType,
    pub order: WordOrder,
    /// For a bool in a register space: which bit of the register (0 = least significant).
    pub bit: Option<u8>,
    /// Engineering value = raw * scale + offset (numbers only).
    pub scale: f64,
    pub offset: f64,
}

impl ModbusTag {
    /// How many registers or bits this tag occupies.
    pub fn width(&self) -> u16 {
        if self.space.is_bit() { 1 } else { self.data_type.registers() }
    }

    /// Whether scale or offset change the raw value.
    pub fn is_scaled(&self) -> bool {
        self.scale != 1.0 || self.offset != 0.0
    }
}
