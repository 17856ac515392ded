//! The config file as written: serde structs that reject unknown keys and keep each value's
//! place in the file, so that validation can name the line and column of a problem.

use serde::Deserialize;
use toml::Spanned;

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub gateway: Option<S<RawGateway>>,
    pub edge: Option<S<RawEdge>>,
    pub store: Option<S<RawStore>>,
    #[serde(default)]
    pub device: Vec<S<RawDevice>>,
    #[serde(default)]
    pub sink: Vec<S<RawSink>>,
    pub receive: Option<S<RawReceive>>,
    pub web: Option<S<RawWeb>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeb {
    pub listen: S<String>,
    pub token_env: Option<S<String>>,
    pub cert_file: Option<S<String>>,
    pub key_file: Option<S<String>>,
    pub allow_plain_http: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReceive {
    pub listen: S<String>,
    pub sender: S<String>,
    pub reorder_ms: Option<S<i64>>,
    pub silent_after_s: Option<S<i64>>,
    pub receive_buffer_bytes: Option<S<i64>>,
    pub key_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdge {
    pub shift_hours: Option<S<i64>>,
    pub shift_start_hour: Option<S<i64>>,
    pub production_interval_s: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub data_dir: Option<S<String>>,
    pub fsync_interval_ms: Option<S<i64>>,
    pub outbox_bytes_max: Option<S<i64>>,
    pub outbox_age_max_hours: Option<S<i64>>,
    pub historian_bytes_max: Option<S<i64>>,
    pub historian_age_max_days: Option<S<i64>>,
    pub free_space_reserve_mb: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    pub name: S<String>,
    #[serde(rename = "type")]
    pub kind: S<String>,
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub topic_prefix: Option<S<String>>,
    pub client_id: Option<S<String>>,
    pub qos: Option<S<i64>>,
    pub username: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub password_file: Option<S<String>>,
    pub inflight_max: Option<S<i64>>,
    pub rate_max_per_s: Option<S<f64>>,
    pub keep_alive_s: Option<S<i64>>,
    pub classes: Option<S<Vec<S<String>>>>,
    pub batch_records_max: Option<S<i64>>,
    pub timeout_ms: Option<S<i64>>,
    pub bearer_token_env: Option<S<String>>,
    pub allow_plain_credentials: Option<S<bool>>,
    pub dead_letters_max_mb: Option<S<i64>>,
    pub proxy: Option<S<String>>,
    pub group_id: Option<S<String>>,
    pub edge_node_id: Option<S<String>>,
    pub birth_interval_s: Option<S<i64>>,
    pub ca_file: Option<S<String>>,
    pub client_cert_file: Option<S<String>>,
    pub client_key_file: Option<S<String>>,
    pub replay: Option<S<String>>,
    pub replay_rate_max_per_s: Option<S<f64>>,
    pub address: Option<S<String>>,
    pub brokers: Option<S<Vec<S<String>>>>,
    pub topic: Option<S<String>>,
    pub compression: Option<S<String>>,
    pub sasl: Option<S<String>>,
    pub tls: Option<S<bool>>,
    pub bind: Option<S<String>>,
    pub mtu_bytes: Option<S<i64>>,
    pub repair_percent: Option<S<f64>>,
    pub rate_max_bytes_per_s: Option<S<i64>>,
    pub heartbeat_s: Option<S<i64>>,
    pub repeat_after_ms: Option<S<i64>>,
    pub block_bytes: Option<S<i64>>,
    pub key_file: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub name: Option<S<String>>,
    pub clock_speed: Option<S<f64>>,
    pub clock_start: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub name: S<String>,
    pub asset_path: S<String>,
    pub protocol: S<String>,
    pub address: S<String>,
    pub unit_id: Option<S<i64>>,
    pub security: Option<S<String>>,
    pub username: Option<S<String>>,
    pub password_env: Option<S<String>>,
    pub allow_plain_credentials: Option<S<bool>>,
    pub password_file: Option<S<String>>,
    pub user_cert_file: Option<S<String>>,
    pub user_key_file: Option<S<String>>,
    pub trusted_server_certs: Option<S<Vec<S<String>>>>,
    pub read_mode: Option<S<String>>,
    pub publishing_interval_ms: Option<S<i64>>,
    pub client_id: Option<S<String>>,
    pub payload: Option<S<String>>,
    pub group_id: Option<S<String>>,
    pub edge_node_id: Option<S<String>>,
    pub ca_file: Option<S<String>>,
    pub client_cert_file: Option<S<String>>,
    pub client_key_file: Option<S<String>>,
    pub poll_interval_ms: Option<S<i64>>,
    pub timeout_ms: Option<S<i64>>,
    pub rate_max_per_s: Option<S<f64>>,
    pub backoff_initial_ms: Option<S<i64>>,
    pub backoff_max_ms: Option<S<i64>>,
    pub max_gap_registers: Option<S<i64>>,
    pub max_gap_bits: Option<S<i64>>,
    pub requests_in_flight_max: Option<S<i64>>,
    #[serde(default)]
    pub tag: Vec<S<RawTag>>,
    pub oee: Option<S<RawOee>>,
    /// The tags' sections in the file, when the file is read section by section
    /// (`crate::sections`): then `tag` is empty and each tag is parsed as it is checked.
    #[serde(skip)]
    pub tag_sections: Vec<crate::sections::Section>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOee {
    pub state_tag: S<String>,
    pub running_value: Option<S<f64>>,
    pub parts_tag: S<String>,
    pub rejects_tag: Option<S<String>>,
    pub ideal_cycle_s: S<f64>,
    pub performance_drop_percent: Option<S<f64>>,
    pub baseline_minutes: Option<S<i64>>,
    pub compare_minutes: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTag {
    pub name: S<String>,
    pub space: Option<S<String>>,
    pub address: Option<S<i64>>,
    #[serde(rename = "type")]
    pub data_type: Option<S<String>>,
    pub node_id: Option<S<String>>,
    pub sampling_interval_ms: Option<S<i64>>,
    pub queue_size: Option<S<i64>>,
    pub server_deadband: Option<S<f64>>,
    pub topic: Option<S<String>>,
    pub value_pointer: Option<S<String>>,
    pub time_pointer: Option<S<String>>,
    pub metric: Option<S<String>>,
    pub sparkplug_device: Option<S<String>>,
    pub order: Option<S<String>>,
    pub bit: Option<S<i64>>,
    pub length_chars: Option<S<i64>>,
    pub scale: Option<S<f64>>,
    pub offset: Option<S<f64>>,
    pub unit: Option<S<String>>,
    pub historian_resolution: Option<S<f64>>,
    pub deadband: Option<S<f64>>,
    pub deadband_percent: Option<S<f64>>,
    pub span_min: Option<S<f64>>,
    pub span_max: Option<S<f64>>,
    pub heartbeat_s: Option<S<i64>>,
    pub swinging_door_dev: Option<S<f64>>,
    pub swinging_door_max_s: Option<S<i64>>,
    pub window_s: Option<S<i64>>,
    pub alarm_high: Option<S<f64>>,
    pub alarm_low: Option<S<f64>>,
    pub alarm_hysteresis: Option<S<f64>>,
    pub alarm_on_delay_ms: Option<S<i64>>,
    pub alarm_off_delay_ms: Option<S<i64>>,
    pub alarm_rate_max_per_s: Option<S<f64>>,
    pub stale_s: Option<S<i64>>,
    pub production: Option<S<bool>>,
    pub production_every_parts: Option<S<i64>>,
    pub production_parts_max_per_s: Option<S<f64>>,
    pub vibration_group: Option<S<i64>>,
    pub vibration_foundation: Option<S<String>>,
    pub vibration_advice_days: Option<S<f64>>,
    pub waveform_samples: Option<S<i64>>,
    pub sample_rate_hz: Option<S<i64>>,
    pub bearing_balls: Option<S<i64>>,
    pub bearing_ball_diameter_mm: Option<S<f64>>,
    pub bearing_pitch_diameter_mm: Option<S<f64>>,
    pub bearing_contact_angle_deg: Option<S<f64>>,
    pub shaft_speed_tag: Option<S<String>>,
}
