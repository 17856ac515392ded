//! The tag table: every configured tag in config order; a tag's `TagId` is its index. The only
//! place tag ids are given.

use airlock_config::{Config, DataType, Device, Protocol};
use airlock_model::{AssetPath, TagId, ValueType};

/// What the gateway knows of a tag.
#[derive(Debug, Clone)]
pub struct TagInfo {
    pub name: String,
    pub path: AssetPath,
    pub unit: Option<Box<str>>,
    /// The device's index in the config.
    pub device: usize,
    /// The type of its values upstream: the configured type, `F64` when scaled.
    pub value_type: ValueType,
    /// The range of an unsigned counter (it rolls over there), for production counts.
    pub counter_modulus: Option<u64>,
}

/// Every tag of a config, and where each device's tags begin.
#[derive(Debug, Clone)]
pub struct TagTable {
    tags: Vec<TagInfo>,
    /// Per device, its first tag's id.
    first: Vec<TagId>,
}

impl TagTable {
    pub fn new(config: &Config) -> Self {
        let mut tags = Vec::new();
        let mut first = Vec::new();
        for (device, d) in config.devices.iter().enumerate() {
            first.push(TagId(tags.len() as u32));
            tags.extend(d.tags.iter().enumerate().map(|(i, t)| TagInfo {
                name: t.name.clone(),
                path: t.path.clone(),
                unit: t.unit.as_deref().map(Into::into),
                device,
                value_type: value_type(d, i),
                counter_modulus: match t.data_type {
                    DataType::U16 | DataType::I16 => Some(1 << 16),
                    DataType::U32 | DataType::I32 => Some(1 << 32),
                    _ => None,
                },
            }));
        }
        Self { tags, first }
    }

    pub fn get(&self, tag: TagId) -> Option<&TagInfo> {
        self.tags.get(tag.0 as usize)
    }

    pub fn len(&self) -> usize {
        self.tags.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &TagInfo> {
        self.tags.iter()
    }

    /// Every tag, a tag's id being its index.
    pub fn as_slice(&self) -> &[TagInfo] {
        &self.tags
    }

    /// The id of device `device`'s first tag.
    pub fn first_tag(&self, device: usize) -> TagId {
        self.first.get(device).copied().unwrap_or(TagId(self.tags.len() as u32))
    }
}

/// Every tag's `historian_resolution` in a config, a tag's id (as [`TagTable::new`] gives it)
/// being its index: read from the config when the historian's tags are bound, not kept per tag.
pub fn historian_resolutions(config: &Config) -> Vec<Option<f64>> {
    config.devices.iter().flat_map(|d| d.tags.iter().map(|t| t.historian_resolution)).collect()
}

/// The upstream type of tag `index` of device `d`: a scaled Modbus number is an `F64`.
pub(crate) fn value_type(d: &Device, index: usize) -> ValueType {
    let Some(data_type) = d.tags.get(index).map(|t| t.data_type) else { return ValueType::F64 };
    if let Protocol::ModbusTcp(m) = &d.protocol
        && m.tags.get(index).is_some_and(|t| t.is_scaled())
        && !matches!(data_type, DataType::Waveform { .. } | DataType::String { .. } | DataType::Bool)
    {
        return ValueType::F64;
    }
    match data_type {
        DataType::Bool => ValueType::Bool,
        DataType::U16 => ValueType::U16,
        DataType::I16 => ValueType::I16,
        DataType::U32 => ValueType::U32,
        DataType::I32 => ValueType::I32,
        DataType::U64 => ValueType::U64,
        DataType::I64 => ValueType::I64,
        DataType::F32 => ValueType::F32,
        DataType::F64 => ValueType::F64,
        DataType::String { .. } => ValueType::Text,
        DataType::Waveform { .. } => ValueType::Waveform,
    }
}
