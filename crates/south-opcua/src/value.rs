//! OPC UA values as samples: a DataValue's status code becomes the quality (good, uncertain or
//! bad with the code's high 16 bits), its source timestamp the sample's source time, its
//! variant a value of the tag's kind (an array of numbers for a waveform tag).

use airlock_config::DataType;
use airlock_model::{Quality, Reason, Timestamp, Value};
use opcua::types::{DataValue, DateTime, StatusCode, Variant};

/// What a DataValue says about a tag of type `ty`.
pub fn reading(dv: &DataValue, ty: DataType) -> (Option<Value>, Quality, Option<Timestamp>) {
    let time = dv.source_timestamp.as_ref().map(timestamp);
    let status = dv.status.unwrap_or(StatusCode::Good);
    let code = (status.bits() >> 16) as u16;
    if status.is_bad() {
        return (None, Quality::Bad(Reason::SourceStatus(code)), time);
    }
    let value = match dv.value.as_ref().map(|v| to_value(v, ty)) {
        Some(Ok(v)) => v,
        Some(Err(reason)) => return (None, Quality::Bad(reason), time),
        None => return (None, Quality::Bad(Reason::DecodeError), time),
    };
    let quality = if status.is_uncertain() { Quality::Uncertain(Reason::SourceStatus(code)) } else { Quality::Good };
    (Some(value), quality, time)
}

pub fn timestamp(t: &DateTime) -> Timestamp {
    Timestamp::from_millis(t.as_chrono().timestamp_millis())
}

/// A variant as a value: integers keep their sign, floats must be finite, text stays text; a
/// waveform tag takes a one-dimensional array of numbers.
pub fn to_value(v: &Variant, ty: DataType) -> Result<Value, Reason> {
    if let DataType::Waveform { .. } = ty {
        let Variant::Array(a) = v else { return Err(Reason::DecodeError) };
        let samples: Option<Vec<f32>> = a.values.iter().map(|x| number(x).map(|n| n as f32)).collect();
        return samples.map(|s| Value::Waveform(s.into())).ok_or(Reason::DecodeError);
    }
    Ok(match v {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(x) => Value::I64(i64::from(*x)),
        Variant::Int16(x) => Value::I64(i64::from(*x)),
        Variant::Int32(x) => Value::I64(i64::from(*x)),
        Variant::Int64(x) => Value::I64(*x),
        Variant::Byte(x) => Value::U64(u64::from(*x)),
        Variant::UInt16(x) => Value::U64(u64::from(*x)),
        Variant::UInt32(x) => Value::U64(u64::from(*x)),
        Variant::UInt64(x) => Value::U64(*x),
        Variant::Float(x) if x.is_finite() => Value::F64(f64::from(*x)),
        Variant::Double(x) if x.is_finite() => Value::F64(*x),
        Variant::Float(_) | Variant::Double(_) => return Err(Reason::NotFinite),
        Variant::String(s) => Value::Text(s.as_ref().into()),
        Variant::LocalizedText(t) => Value::Text(t.text.as_ref().into()),
        Variant::DateTime(t) => Value::I64(timestamp(t).as_millis()),
        _ => return Err(Reason::DecodeError),
    })
}

fn number(v: &Variant) -> Option<f64> {
    Some(match v {
        Variant::SByte(x) => f64::from(*x),
        Variant::Int16(x) => f64::from(*x),
        Variant::Int32(x) => f64::from(*x),
        Variant::Int64(x) => *x as f64,
        Variant::Byte(x) => f64::from(*x),
        Variant::UInt16(x) => f64::from(*x),
        Variant::UInt32(x) => f64::from(*x),
        Variant::UInt64(x) => *x as f64,
        Variant::Float(x) => f64::from(*x),
        Variant::Double(x) => *x,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_become_qualities() {
        let mut dv = DataValue::new_now(Variant::Int16(-7));
        assert_eq!(reading(&dv, DataType::F64).0, Some(Value::I64(-7)));
        assert_eq!(reading(&dv, DataType::F64).1, Quality::Good);
        dv.status = Some(StatusCode::UncertainLastUsableValue);
        let (v, q, _) = reading(&dv, DataType::F64);
        assert_eq!((v, q), (Some(Value::I64(-7)), Quality::Uncertain(Reason::SourceStatus(0x4090))));
        dv.status = Some(StatusCode::BadNodeIdUnknown);
        assert_eq!(reading(&dv, DataType::F64).1, Quality::Bad(Reason::SourceStatus(0x8034)));
        assert_eq!(to_value(&Variant::Double(f64::NAN), DataType::F64), Err(Reason::NotFinite));
        let wave = Variant::from(vec![1.0f32, -2.5, 3.0]);
        let w = DataType::Waveform { samples: 3, rate_hz: 100 };
        assert_eq!(to_value(&wave, w), Ok(Value::Waveform(vec![1.0, -2.5, 3.0].into())));
        assert_eq!(to_value(&Variant::Double(1.0), w), Err(Reason::DecodeError));
    }
}
