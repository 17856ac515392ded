//! `airlock import modbus-csv MAP.csv --device NAME --address HOST:PORT`: a PLC programmer's
//! register list (a spreadsheet saved as CSV) turned into a `[[device]]` for the config, which
//! `airlock check` accepts. Columns, by header name (any order, any case; `;` or `,` between
//! fields): `name`, `address`, `type` (required); `order`, `scale`, `offset`, `unit`, `space`,
//! `bit`, `length` (optional). Without a `space` column an address is 1-based Modicon notation
//! (`00001` coil, `10001` discrete input, `30001` input register, `40001` holding register; six
//! digits `400001` too); with one, it is the 0-based protocol address in that space. A bad row is
//! named by its row number (as a spreadsheet shows it) and column; nothing is printed then.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

#[derive(clap::Args)]
pub struct ModbusCsvArgs {
    /// The register list (CSV with a header row).
    pub map: PathBuf,
    /// The device's name in the config.
    #[arg(long)]
    pub device: String,
    /// The device's Modbus TCP address, host:port.
    #[arg(long)]
    pub address: String,
    /// Its asset path (ISA-95: enterprise/site/area/line/cell); `plant/<device>` by default.
    #[arg(long)]
    pub asset_path: Option<String>,
    /// The Modbus unit id (slave id).
    #[arg(long, default_value_t = 1)]
    pub unit_id: u8,
    /// How often to poll, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub poll_interval_ms: u64,
}

/// Prints the `[[device]]` made from the map, after checking it as `airlock check` would.
pub fn modbus_csv(args: &ModbusCsvArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.map).with_context(|| format!("read {}", args.map.display()))?;
    let toml = device_toml(&text, &args.map, args)?;
    // The same validation as `airlock check`: a map that makes a bad config is refused here.
    airlock_config::parse(&toml, Path::new("imported.toml"))
        .map_err(|e| anyhow::anyhow!("the device made from {} does not pass check:\n{e}", args.map.display()))?;
    crate::print_out(&toml);
    Ok(())
}

/// One register list row, read.
struct Row {
    name: String,
    /// The name as the list gives it, when it had to change to be a tag name.
    given: Option<String>,
    space: &'static str,
    address: u32,
    data_type: &'static str,
    order: Option<&'static str>,
    scale: Option<f64>,
    offset: Option<f64>,
    unit: Option<String>,
    bit: Option<u8>,
    length: Option<u16>,
}

/// The `[[device]]` TOML for the register list `text` (read from `file`).
pub fn device_toml(text: &str, file: &Path, args: &ModbusCsvArgs) -> anyhow::Result<String> {
    let records = parse_csv(text);
    let Some((header, rows)) = records.split_first() else { anyhow::bail!("{}: empty", file.display()) };
    let columns: Vec<String> = header.iter().map(|h| h.trim().to_ascii_lowercase().replace([' ', '-'], "_")).collect();
    let column = |names: &[&str]| columns.iter().position(|c| names.contains(&c.as_str()));
    let required = |names: &[&str]| {
        column(names).ok_or_else(|| anyhow::anyhow!("{}: no column {:?} in the header row", file.display(), names[0]))
    };
    let (name_col, address_col, type_col) = (
        required(&["name", "tag", "tag_name"])?,
        required(&["address", "register"])?,
        required(&["type", "data_type"])?,
    );
    let order_col = column(&["order", "word_order", "byte_order"]);
    let (scale_col, offset_col, unit_col) = (column(&["scale"]), column(&["offset"]), column(&["unit", "units"]));
    let (space_col, bit_col, length_col) =
        (column(&["space", "area"]), column(&["bit"]), column(&["length", "length_chars"]));

    let mut problems = Vec::new();
    let mut parsed: Vec<(usize, Row)> = Vec::new();
    for (i, fields) in rows.iter().enumerate() {
        let row_number = i + 2; // the header is row 1
        if fields.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let cell = |c: Option<usize>| c.and_then(|c| fields.get(c)).map(|f| f.trim()).filter(|f| !f.is_empty());
        let mut bad = |col: &str, why: String| {
            problems.push(format!("{}: row {row_number}, column {col}: {why}", file.display()))
        };
        let Some(given) = cell(Some(name_col)) else {
            bad("name", "empty".into());
            continue;
        };
        let name = tag_name(given);
        if name.trim_matches('_').is_empty() {
            bad("name", format!("{given:?} has no letter or digit to make a tag name of"));
            continue;
        }
        if let Some((first, _)) = parsed.iter().find(|(_, r)| r.name == name) {
            let as_tag = if name == given { String::new() } else { format!(" (tag name {name:?})") };
            bad("name", format!("{given:?}{as_tag} is already the name of row {first}"));
            continue;
        }
        let data_type = match cell(Some(type_col)).map(data_type) {
            Some(Ok(t)) => t,
            Some(Err(why)) => {
                bad("type", why);
                continue;
            }
            None => {
                bad("type", "empty".into());
                continue;
            }
        };
        let address = cell(Some(address_col)).unwrap_or("");
        let place = match cell(space_col) {
            Some(space) => space_of(space).and_then(|s| {
                let a = address.parse::<u32>().map_err(|_| format!("{address:?} is not a 0-based address"))?;
                if a > 65_535 { Err(format!("{a} is past 65535")) } else { Ok((s, a)) }
            }),
            None => modicon(address),
        };
        let (space, address) = match place {
            Ok(p) => p,
            Err(why) => {
                bad(if space_col.is_some() && why.starts_with("unknown space") { "space" } else { "address" }, why);
                continue;
            }
        };
        let order = match cell(order_col).map(order) {
            Some(Ok(o)) => o,
            Some(Err(why)) => {
                bad("order", why);
                continue;
            }
            None => None,
        };
        let mut number = |col: Option<usize>, name: &str| match cell(col).map(|v| v.replace(',', ".").parse::<f64>()) {
            Some(Ok(v)) if v.is_finite() => Some(v),
            Some(_) => {
                bad(name, format!("{:?} is not a number", cell(col).unwrap_or("")));
                None
            }
            None => None,
        };
        let (scale, offset) = (number(scale_col, "scale"), number(offset_col, "offset"));
        let bit = match cell(bit_col).map(str::parse::<u8>) {
            Some(Ok(b)) if b < 16 => Some(b),
            Some(_) => {
                bad("bit", format!("{:?} is not a bit number 0 to 15", cell(bit_col).unwrap_or("")));
                continue;
            }
            None => None,
        };
        let length = match cell(length_col).map(str::parse::<u16>) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                bad("length", format!("{:?} is not a length in characters", cell(length_col).unwrap_or("")));
                continue;
            }
            None => None,
        };
        let unit = cell(unit_col).map(str::to_owned);
        parsed.push((
            row_number,
            Row {
                given: (name != given).then(|| given.to_owned()),
                name,
                space,
                address,
                data_type,
                order,
                scale,
                offset,
                unit,
                bit,
                length,
            },
        ));
    }
    if !problems.is_empty() {
        anyhow::bail!(
            "{} problem{} in the register list:\n  {}",
            problems.len(),
            plural(problems.len()),
            problems.join("\n  ")
        );
    }
    if parsed.is_empty() {
        anyhow::bail!("{}: no register rows under the header", file.display());
    }

    let asset_path = args.asset_path.clone().unwrap_or_else(|| format!("plant/{}", args.device));
    let mut out = format!(
        "# Made by `airlock import modbus-csv` from {} ({} tags).\n[[device]]\nname = {}\nasset_path = {}\n\
         protocol = \"modbus_tcp\"\naddress = {}\nunit_id = {}\npoll_interval_ms = {}\n",
        file.display().to_string().replace(['\n', '\r'], " "),
        parsed.len(),
        airlock_config::toml_quoted(&args.device),
        airlock_config::toml_quoted(&asset_path),
        airlock_config::toml_quoted(&args.address),
        args.unit_id,
        args.poll_interval_ms
    );
    for (_, r) in &parsed {
        out.push('\n');
        if let Some(given) = &r.given {
            // A comment ends at a line's end: the list's name is written with no control character.
            let shown: String = given.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            let _ = writeln!(out, "# named {shown:?} in the list");
        }
        let _ = write!(
            out,
            "[[device.tag]]\nname = {}\nspace = \"{}\"\naddress = {}\ntype = \"{}\"\n",
            airlock_config::toml_quoted(&r.name),
            r.space,
            r.address,
            r.data_type
        );
        if let Some(o) = r.order {
            let _ = writeln!(out, "order = \"{o}\"");
        }
        if let Some(s) = r.scale {
            let _ = writeln!(out, "scale = {s:?}");
        }
        if let Some(o) = r.offset {
            let _ = writeln!(out, "offset = {o:?}");
        }
        if let Some(b) = r.bit {
            let _ = writeln!(out, "bit = {b}");
        }
        if let Some(n) = r.length {
            let _ = writeln!(out, "length_chars = {n}");
        }
        if let Some(u) = &r.unit {
            let _ = writeln!(out, "unit = {}", airlock_config::toml_quoted(u));
        }
    }
    Ok(out)
}

/// A tag name from a list's name: letters, digits, `-`, `_` and `.` kept, anything else `_`
/// (`Oil temp (°C)` is `Oil_temp__C_`).
fn tag_name(given: &str) -> String {
    given.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A Modicon address: its space and 0-based address.
fn modicon(text: &str) -> Result<(&'static str, u32), String> {
    let digits = text.trim_start_matches(['%', 'M', 'm']);
    let bad = || {
        format!(
            "{text:?} is not a 1-based Modicon address (00001, 10001, 30001 or 40001 style; give a space column for 0-based addresses)"
        )
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || !(5..=6).contains(&digits.len()) {
        return Err(bad());
    }
    let (kind, rest) = digits.split_at(1);
    let number: u32 = rest.parse().map_err(|_| bad())?;
    let space = match kind {
        "0" => "coil",
        "1" => "discrete_input",
        "3" => "input_register",
        "4" => "holding_register",
        _ => return Err(bad()),
    };
    if number == 0 || number > 65_536 {
        return Err(format!("{text:?}: the register number {number} is outside 1 to 65536"));
    }
    Ok((space, number - 1))
}

fn space_of(text: &str) -> Result<&'static str, String> {
    Ok(match text.to_ascii_lowercase().replace([' ', '-'], "_").as_str() {
        "coil" | "coils" | "0x" => "coil",
        "discrete_input" | "discrete_inputs" | "input" | "1x" => "discrete_input",
        "input_register" | "input_registers" | "3x" => "input_register",
        "holding_register" | "holding_registers" | "holding" | "4x" => "holding_register",
        _ => {
            return Err(format!("unknown space {text:?} (coil, discrete_input, input_register, holding_register)"));
        }
    })
}

/// A type as spreadsheets write them.
fn data_type(text: &str) -> Result<&'static str, String> {
    Ok(match text.to_ascii_lowercase().replace([' ', '-', '_'], "").as_str() {
        "bool" | "boolean" | "bit" => "bool",
        "u16" | "uint16" | "uint" | "word" | "unsigned" => "u16",
        "i16" | "int16" | "int" | "short" | "signed" => "i16",
        "u32" | "uint32" | "dword" | "udint" => "u32",
        "i32" | "int32" | "dint" | "long" => "i32",
        "u64" | "uint64" | "lword" | "ulint" => "u64",
        "i64" | "int64" | "lint" => "i64",
        "f32" | "float" | "float32" | "real" | "single" => "f32",
        "f64" | "double" | "float64" | "lreal" => "f64",
        "string" | "str" | "text" | "ascii" => "string",
        _ => {
            return Err(format!("unknown type {text:?} (bool, u16, i16, u32, i32, u64, i64, f32, f64, string)"));
        }
    })
}

/// A byte and word order as spreadsheets write them (`None`: the Modbus standard, big-endian).
fn order(text: &str) -> Result<Option<&'static str>, String> {
    Ok(Some(match text.to_ascii_lowercase().replace([' ', '-', '_'], "").as_str() {
        "abcd" | "big" | "bigendian" | "be" | "msw" | "msbfirst" => "abcd",
        "cdab" | "wordswap" | "wordswapped" | "swapped" | "lsw" | "littlewordfirst" => "cdab",
        "badc" | "byteswap" | "byteswapped" => "badc",
        "dcba" | "little" | "littleendian" | "le" => "dcba",
        _ => return Err(format!("unknown order {text:?} (abcd, cdab, badc, dcba)")),
    }))
}

/// CSV records (RFC 4180: quoted fields, doubled quotes, CRLF or LF), with `;` as the
/// separator when the first line has a `;` and no `,` (spreadsheets in many locales).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let first = text.lines().next().unwrap_or("");
    let separator = if first.contains(';') && !first.contains(',') { ';' } else { ',' };
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if field.is_empty() => quoted = true,
            c if c == separator && !quoted => record.push(std::mem::take(&mut field)),
            '\r' if !quoted => {}
            '\n' if !quoted => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            c => field.push(c),
        }
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args() -> ModbusCsvArgs {
        ModbusCsvArgs {
            map: "map.csv".into(),
            device: "press1".into(),
            address: "10.0.0.5:502".into(),
            asset_path: Some("acme/site/press1".into()),
            unit_id: 1,
            poll_interval_ms: 1000,
        }
    }

    #[test]
    fn a_register_list_becomes_a_device_that_check_accepts() {
        let csv = "Name;Address;Type;Word order;Scale;Unit\r\n\
                   speed;30001;REAL;word swap;;rpm\r\n\
                   \"temp \"\"oil\"\"\";40010;int16;;0,1;degC\r\n\
                   running;00001;bool;;;\r\n\r\n";
        let toml = device_toml(csv, Path::new("map.csv"), &args()).unwrap();
        let config = airlock_config::parse(&toml, Path::new("imported.toml")).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let d = &config.devices[0];
        assert_eq!(d.tags.len(), 3);
        assert_eq!(d.tags[1].name, "temp__oil_");
        assert!(toml.contains("# named \"temp \\\"oil\\\"\" in the list\n"), "{toml}");
        assert!(toml.contains("address = 0\ntype = \"f32\"\norder = \"cdab\"\n"), "{toml}");
        assert!(toml.contains("space = \"holding_register\"\naddress = 9\ntype = \"i16\"\nscale = 0.1\n"), "{toml}");
        assert!(toml.contains("space = \"coil\"\naddress = 0\ntype = \"bool\"\n"), "{toml}");
    }

    #[test]
    fn bad_rows_are_named_by_row_and_column() {
        let csv = "name,address,type,order\nspeed,30001,flaot,\nspeed2,50001,u16,\nspeed2,40001,u16,\nspeed2,40002,u16,\nx,40003,u32,middle\n";
        let e = device_toml(csv, Path::new("map.csv"), &args()).unwrap_err().to_string();
        assert!(e.starts_with("4 problems"), "{e}");
        assert!(e.contains("map.csv: row 2, column type: unknown type \"flaot\""), "{e}");
        assert!(e.contains("map.csv: row 3, column address: \"50001\" is not a 1-based Modicon address"), "{e}");
        assert!(e.contains("map.csv: row 5, column name: \"speed2\" is already the name of row 4"), "{e}");
        assert!(e.contains("map.csv: row 6, column order: unknown order \"middle\""), "{e}");
        let e = device_toml("name,type\nx,u16\n", Path::new("map.csv"), &args()).unwrap_err().to_string();
        assert!(e.contains("no column \"address\""), "{e}");
    }

    #[test]
    fn a_name_cannot_inject_toml() {
        let csv = "name,address,type\n\"a\"\"\nprotocol = \"\"x\",40001,u16\n";
        let toml = device_toml(csv, Path::new("map.csv"), &args()).unwrap();
        let config = airlock_config::parse(&toml, Path::new("imported.toml")).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(config.devices[0].tags[0].name, "a__protocol____x");
        assert!(toml.contains("# named \"a\\\" protocol = \\\"x\" in the list\n"), "{toml}");
    }
}
