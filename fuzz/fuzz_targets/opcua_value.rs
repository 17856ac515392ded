//! What an OPC UA server sends as a value: any OPC UA binary DataValue the library decodes,
//! mapped to every tag type: a sample (maybe bad) and never a panic.
#![no_main]

use airlock_config::DataType;
use airlock_south_opcua::value::reading;
use libfuzzer_sys::fuzz_target;
use opcua::types::{BinaryDecodable, ContextOwned, DataValue};

const TYPES: [DataType; 12] = [
    DataType::Bool,
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::U64,
    DataType::I64,
    DataType::F32,
    DataType::F64,
    DataType::String { length_chars: 8 },
    DataType::String { length_chars: 0 },
    DataType::Waveform { samples: 16, rate_hz: 1000 },
];

fuzz_target!(|bytes: &[u8]| {
    // The loaders a gateway session has: async-opcua's, after airlock's refusal of Arguments.
    let mut context = ContextOwned::default();
    airlock_south_opcua::link::refuse_arguments_first(context.loaders_mut());
    let mut stream = std::io::Cursor::new(bytes);
    let Ok(dv) = DataValue::decode(&mut stream, &context.context()) else { return };
    for ty in TYPES {
        let _ = reading(&dv, ty);
    }
});
