//! The Sparkplug B payload (written by hand from the public `sparkplug_b.proto` of Eclipse Tahu
//! as prost structs, so no `protoc` is needed) and its datatype codes. Both sides of airlock use
//! it: the IT-side sink that publishes Sparkplug B and the OT-side subscriber that reads it from
//! a plant broker. Only the scalar parts are modelled; prost skips the rest (datasets,
//! templates, bytes) when it decodes, so such metrics arrive without a value.

pub mod proto {
    //! The Sparkplug B payload, as in `sparkplug_b.proto` (proto2).

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Payload {
        #[prost(uint64, optional, tag = "1")]
        pub timestamp: Option<u64>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
        #[prost(uint64, optional, tag = "3")]
        pub seq: Option<u64>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(uint64, optional, tag = "2")]
        pub alias: Option<u64>,
        #[prost(uint64, optional, tag = "3")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "4")]
        pub datatype: Option<u32>,
        #[prost(bool, optional, tag = "5")]
        pub is_historical: Option<bool>,
        #[prost(bool, optional, tag = "6")]
        pub is_transient: Option<bool>,
        #[prost(bool, optional, tag = "7")]
        pub is_null: Option<bool>,
        #[prost(message, optional, tag = "9")]
        pub properties: Option<PropertySet>,
        #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15")]
        pub value: Option<MetricValue>,
    }

    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum MetricValue {
        #[prost(uint32, tag = "10")]
        Int(u32),
        #[prost(uint64, tag = "11")]
        Long(u64),
        #[prost(float, tag = "12")]
        Float(f32),
        #[prost(double, tag = "13")]
        Double(f64),
        #[prost(bool, tag = "14")]
        Boolean(bool),
        #[prost(string, tag = "15")]
        String(String),
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertySet {
        #[prost(string, repeated, tag = "1")]
        pub keys: Vec<String>,
        #[prost(message, repeated, tag = "2")]
        pub values: Vec<PropertyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertyValue {
        #[prost(uint32, optional, tag = "1")]
        pub r#type: Option<u32>,
        #[prost(uint32, optional, tag = "3")]
        pub int_value: Option<u32>,
    }
}

/// Sparkplug B datatype codes (specification 3.0, 6.4.16).
pub mod datatype {
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
    pub const TEXT: u32 = 14;
}
