//! `ferrogate modbus read|probe|scan`: talk to a Modbus device directly, no
//! daemon needed. The client side is tokio-modbus, independent of the
//! adapter's own transport, so a tech can cross-check what the gateway
//! sees; values are decoded with the adapter's codec, so a `--type` and
//! `--order` found here mean exactly the same in a point map.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use ferrogate_modbus::codec;
use ferrogate_modbus::point::{Area, Order, Point, PointType, resolve_modicon};
use ferrogate_sdk::Value;
use serde_json::{Value as Json, json};
use tokio_modbus::client::{Context, Reader, rtu, tcp};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use super::EXIT_FAILED;
use super::output::Table;

/// Where the device is.
#[derive(Debug, Clone, Args)]
pub struct Link {
    /// Modbus TCP: `HOST:PORT`.
    #[arg(long, group = "link", value_name = "HOST:PORT")]
    pub tcp: Option<String>,
    /// RTU on a serial port, e.g. /dev/ttyUSB0.
    #[arg(long, group = "link", value_name = "PORT")]
    pub rtu: Option<String>,
    /// RTU framing over TCP (serial device servers, 4G DTUs).
    #[arg(long, group = "link", value_name = "HOST:PORT")]
    pub rtu_over_tcp: Option<String>,
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    #[arg(long, value_enum, default_value_t = ParityArg::None)]
    pub parity: ParityArg,
    #[arg(long, default_value_t = 1)]
    pub stop_bits: u8,
    /// Per-request timeout, e.g. 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ParityArg {
    None,
    Even,
    Odd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AreaArg {
    Coil,
    Discrete,
    Input,
    Holding,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TypeArg {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
    F64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OrderArg {
    #[value(name = "ABCD")]
    Abcd,
    #[value(name = "CDAB")]
    Cdab,
    #[value(name = "BADC")]
    Badc,
    #[value(name = "DCBA")]
    Dcba,
}

/// What to read: `--address` is zero-based; a Modicon reference such as
/// 40001 (with no `--area`) is resolved to its area and address.
#[derive(Debug, Clone, Args)]
pub struct Range {
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    #[arg(long, value_enum)]
    pub area: Option<AreaArg>,
    #[arg(long)]
    pub address: u32,
    /// Registers (or bits) to read; with --type, values of that type.
    #[arg(long, default_value_t = 1)]
    pub count: u16,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    ferrogate_sdk::config::ConfigDuration::parse(s).map(|d| d.0)
}

impl Range {
    /// The area and zero-based address, resolving a Modicon reference.
    fn resolve(&self) -> Result<(Area, u16), String> {
        match self.area {
            Some(a) => {
                let address = u16::try_from(self.address)
                    .map_err(|_| format!("address {} is above 65535", self.address))?;
                Ok((area(a), address))
            }
            None if self.address >= 10_001 => resolve_modicon(self.address),
            None => {
                let address = u16::try_from(self.address)
                    .map_err(|_| format!("address {} is above 65535", self.address))?;
                Ok((Area::Holding, address))
            }
        }
    }
}

fn area(a: AreaArg) -> Area {
    match a {
        AreaArg::Coil => Area::Coil,
        AreaArg::Discrete => Area::Discrete,
        AreaArg::Input => Area::Input,
        AreaArg::Holding => Area::Holding,
    }
}

const ORDERS: [Order; 4] = [Order::Abcd, Order::Cdab, Order::Badc, Order::Dcba];

fn order(o: OrderArg) -> Order {
    match o {
        OrderArg::Abcd => Order::Abcd,
        OrderArg::Cdab => Order::Cdab,
        OrderArg::Badc => Order::Badc,
        OrderArg::Dcba => Order::Dcba,
    }
}

fn point_type(t: TypeArg) -> PointType {
    match t {
        TypeArg::U16 => PointType::U16,
        TypeArg::I16 => PointType::I16,
        TypeArg::U32 => PointType::U32,
        TypeArg::I32 => PointType::I32,
        TypeArg::U64 => PointType::U64,
        TypeArg::I64 => PointType::I64,
        TypeArg::F32 => PointType::F32,
        TypeArg::F64 => PointType::F64,
    }
}

async fn connect(link: &Link, unit: u8) -> Result<Context, String> {
    let slave = Slave(unit);
    let within = |what: String| move |_| format!("{what}: no connection within {:?}", link.timeout);
    if let Some(addr) = &link.tcp {
        let addr = resolve(addr).await?;
        return tokio::time::timeout(link.timeout, tcp::connect_slave(addr, slave))
            .await
            .map_err(within(format!("{addr}")))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"));
    }
    if let Some(addr) = &link.rtu_over_tcp {
        let addr = resolve(addr).await?;
        let stream = tokio::time::timeout(link.timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(within(format!("{addr}")))?
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        return Ok(rtu::attach_slave(stream, slave));
    }
    if let Some(port) = &link.rtu {
        use tokio_serial::SerialPortBuilderExt;
        let parity = match link.parity {
            ParityArg::None => tokio_serial::Parity::None,
            ParityArg::Even => tokio_serial::Parity::Even,
            ParityArg::Odd => tokio_serial::Parity::Odd,
        };
        let stop_bits = if link.stop_bits == 2 {
            tokio_serial::StopBits::Two
        } else {
            tokio_serial::StopBits::One
        };
        let stream = tokio_serial::new(port, link.baud)
            .parity(parity)
            .stop_bits(stop_bits)
            .data_bits(tokio_serial::DataBits::Eight)
            .open_native_async()
            .map_err(|e| format!("cannot open {port}: {e}"))?;
        return Ok(rtu::attach_slave(stream, slave));
    }
    Err("say where the device is: --tcp HOST:PORT, --rtu PORT or --rtu-over-tcp HOST:PORT".into())
}

async fn resolve(addr: &str) -> Result<std::net::SocketAddr, String> {
    tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} has no address"))
}

/// Registers as big-endian bytes, or bits.
enum Data {
    Registers(Vec<u16>),
    Bits(Vec<bool>),
}

/// Why a read gave no data.
enum ReadError {
    Exception(ExceptionCode),
    Timeout,
    Transport(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Exception(code) => write!(f, "exception {} ({code})", u8::from(*code)),
            ReadError::Timeout => f.write_str("timeout: no answer"),
            ReadError::Transport(e) => f.write_str(e),
        }
    }
}

async fn read(
    ctx: &mut Context,
    area: Area,
    address: u16,
    count: u16,
    timeout: Duration,
) -> Result<Data, ReadError> {
    let result = tokio::time::timeout(timeout, async {
        match area {
            Area::Coil => ctx
                .read_coils(address, count)
                .await
                .map(|r| r.map(Data::Bits)),
            Area::Discrete => ctx
                .read_discrete_inputs(address, count)
                .await
                .map(|r| r.map(Data::Bits)),
            Area::Input => ctx
                .read_input_registers(address, count)
                .await
                .map(|r| r.map(Data::Registers)),
            Area::Holding => ctx
                .read_holding_registers(address, count)
                .await
                .map(|r| r.map(Data::Registers)),
        }
    })
    .await;
    match result {
        Err(_) => Err(ReadError::Timeout),
        Ok(Err(e)) => Err(ReadError::Transport(e.to_string())),
        Ok(Ok(Err(code))) => Err(ReadError::Exception(code)),
        Ok(Ok(Ok(data))) => Ok(data),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

fn fail(json: bool, code: &str, message: &str) -> ExitCode {
    if json {
        println!(
            "{}",
            json!({"ok": false, "error": {"code": code, "message": message}})
        );
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(EXIT_FAILED)
}

fn read_once(
    link: &Link,
    range: &Range,
    registers: u16,
) -> Result<(Area, u16, Data), (String, String)> {
    let (area, address) = range
        .resolve()
        .map_err(|e| ("bad_request".to_string(), e))?;
    let rt = runtime().map_err(|e| ("internal".to_string(), e))?;
    rt.block_on(async {
        let mut ctx = connect(link, range.unit)
            .await
            .map_err(|e| ("connect".to_string(), e))?;
        let data = read(&mut ctx, area, address, registers, link.timeout)
            .await
            .map_err(|e| match e {
                ReadError::Exception(_) => ("device_exception".to_string(), e.to_string()),
                ReadError::Timeout => (
                    "timeout".to_string(),
                    format!(
                        "unit {} did not answer within {:?}",
                        range.unit, link.timeout
                    ),
                ),
                ReadError::Transport(_) => ("io".to_string(), e.to_string()),
            })?;
        Ok((area, address, data))
    })
}

fn point(address: u16, ty: PointType, order: Order) -> Point {
    Point {
        name: "".into(),
        area: Area::Holding,
        address,
        ty,
        order,
        scale: 1.0,
        offset: 0.0,
        unit: None,
        description: None,
        writable: false,
        min: None,
        max: None,
        poll: None,
        deadband: None,
    }
}

fn decode(words: &[u16], at: usize, ty: PointType, order: Order) -> Option<Value> {
    let width = usize::from(ty.width());
    let slice = words.get(at..at + width)?;
    let wire: Vec<u8> = slice.iter().flat_map(|w| w.to_be_bytes()).collect();
    codec::decode(&point(0, ty, order), &wire).ok()
}

/// Plain decimals for plausible magnitudes, short scientific otherwise, so
/// the one sensible interpretation in a probe stands out.
fn show(v: &Option<Value>) -> String {
    match v {
        Some(Value::Float(f)) if *f == 0.0 || (1e-4..1e9).contains(&f.abs()) => {
            let s = format!("{f:.6}");
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        }
        Some(Value::Float(f)) => format!("{f:.3e}"),
        Some(v) => v.to_string(),
        None => "-".into(),
    }
}

fn json_value(v: &Option<Value>) -> Json {
    v.as_ref().map(Value::to_json).unwrap_or(Json::Null)
}

/// `modbus read`.
pub fn read_command(
    link: &Link,
    range: &Range,
    ty: Option<TypeArg>,
    ord: OrderArg,
    as_json: bool,
) -> ExitCode {
    let width = ty.map(|t| point_type(t).width()).unwrap_or(1);
    let registers = range.count.saturating_mul(width);
    let (area, address, data) = match read_once(link, range, registers) {
        Ok(r) => r,
        Err((code, message)) => return fail(as_json, &code, &message),
    };
    let rows: Vec<(u32, String, Json, String)> = match data {
        Data::Bits(bits) => bits
            .iter()
            .take(usize::from(range.count))
            .enumerate()
            .map(|(i, b)| {
                (
                    u32::from(address) + i as u32,
                    String::new(),
                    json!(b),
                    b.to_string(),
                )
            })
            .collect(),
        Data::Registers(words) => match ty {
            None => words
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    (
                        u32::from(address) + i as u32,
                        format!("{w:04x}"),
                        json!(w),
                        w.to_string(),
                    )
                })
                .collect(),
            Some(t) => (0..usize::from(range.count))
                .map(|i| {
                    let at = i * usize::from(width);
                    let raw: String = words
                        .iter()
                        .skip(at)
                        .take(usize::from(width))
                        .map(|w| format!("{w:04x}"))
                        .collect();
                    let v = decode(&words, at, point_type(t), order(ord));
                    (
                        u32::from(address) + at as u32,
                        raw,
                        json_value(&v),
                        show(&v),
                    )
                })
                .collect(),
        },
    };
    if as_json {
        let values: Vec<Json> = rows
            .iter()
            .map(|(a, raw, v, _)| json!({"address": a, "one_based": a + 1, "raw": raw, "value": v}))
            .collect();
        println!(
            "{}",
            json!({"ok": true, "unit": range.unit, "area": area.as_str(), "values": values})
        );
    } else {
        let mut t = Table::new(&["ADDRESS", "1-BASED", "RAW", "VALUE"]);
        for (a, raw, _, shown) in rows {
            t.row(vec![a.to_string(), (a + 1).to_string(), raw, shown]);
        }
        print!("{}", t.render());
    }
    ExitCode::SUCCESS
}

/// `modbus probe`: every register pair and quad as each type in all four
/// byte orders, side by side, so the right interpretation stands out.
pub fn probe_command(link: &Link, range: &Range, as_json: bool) -> ExitCode {
    let (area, address, data) = match read_once(link, range, range.count.max(2)) {
        Ok(r) => r,
        Err((code, message)) => return fail(as_json, &code, &message),
    };
    let Data::Registers(words) = data else {
        return fail(
            as_json,
            "bad_request",
            "probe reads registers: use --area holding or input",
        );
    };
    let kinds: [(PointType, &str); 6] = [
        (PointType::U32, "u32"),
        (PointType::I32, "i32"),
        (PointType::F32, "f32"),
        (PointType::U64, "u64"),
        (PointType::I64, "i64"),
        (PointType::F64, "f64"),
    ];
    let mut decoded = Vec::new();
    for at in 0..words.len() {
        for (ty, name) in kinds {
            if at + usize::from(ty.width()) > words.len() {
                continue;
            }
            let values: Vec<Option<Value>> =
                ORDERS.iter().map(|o| decode(&words, at, ty, *o)).collect();
            decoded.push((u32::from(address) + at as u32, name, values));
        }
    }
    if as_json {
        let registers: Vec<Json> = words
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let a = u32::from(address) + i as u32;
                json!({"address": a, "one_based": a + 1, "hex": format!("{w:04x}"), "u16": w, "i16": *w as i16})
            })
            .collect();
        let interpretations: Vec<Json> = decoded
            .iter()
            .map(|(a, name, values)| {
                let by_order: serde_json::Map<String, Json> = ORDERS
                    .iter()
                    .zip(values)
                    .map(|(o, v)| (o.as_str().to_string(), json_value(v)))
                    .collect();
                json!({"address": a, "one_based": a + 1, "type": name, "orders": by_order})
            })
            .collect();
        println!(
            "{}",
            json!({"ok": true, "unit": range.unit, "area": area.as_str(), "registers": registers, "interpretations": interpretations})
        );
        return ExitCode::SUCCESS;
    }
    let mut regs = Table::new(&["ADDRESS", "1-BASED", "HEX", "U16", "I16"]);
    for (i, w) in words.iter().enumerate() {
        let a = u32::from(address) + i as u32;
        regs.row(vec![
            a.to_string(),
            (a + 1).to_string(),
            format!("{w:04x}"),
            w.to_string(),
            (*w as i16).to_string(),
        ]);
    }
    println!("{}", regs.render());
    let mut t = Table::new(&["ADDRESS", "1-BASED", "TYPE", "ABCD", "CDAB", "BADC", "DCBA"]);
    for (a, name, values) in &decoded {
        let mut row = vec![a.to_string(), (a + 1).to_string(), name.to_string()];
        row.extend(values.iter().map(show));
        t.row(row);
    }
    print!("{}", t.render());
    ExitCode::SUCCESS
}

/// `modbus scan`: which unit ids answer on a line (an exception is an answer).
pub fn scan_command(link: &Link, from: u8, to: u8, address: u16, as_json: bool) -> ExitCode {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(as_json, "internal", &e),
    };
    let found = rt.block_on(async {
        let mut found = Vec::new();
        let mut ctx: Option<Context> = None;
        for unit in from..=to {
            if ctx.is_none() {
                ctx = match connect(link, unit).await {
                    Ok(c) => Some(c),
                    Err(e) => return Err(e),
                };
            }
            let Some(c) = ctx.as_mut() else { continue };
            c.set_slave(Slave(unit));
            match read(c, Area::Holding, address, 1, link.timeout).await {
                Ok(_) => found.push((unit, "answered".to_string())),
                Err(ReadError::Exception(code)) => found.push((
                    unit,
                    format!("answered with exception {} ({code})", u8::from(code)),
                )),
                // A late reply would desynchronise the line: start afresh.
                Err(ReadError::Timeout) | Err(ReadError::Transport(_)) => ctx = None,
            }
        }
        Ok(found)
    });
    let found = match found {
        Ok(f) => f,
        Err(e) => return fail(as_json, "connect", &e),
    };
    if as_json {
        let units: Vec<Json> = found
            .iter()
            .map(|(u, how)| json!({"unit": u, "result": how}))
            .collect();
        println!("{}", json!({"ok": true, "units": units}));
    } else if found.is_empty() {
        println!("no unit between {from} and {to} answered");
    } else {
        let mut t = Table::new(&["UNIT", "RESULT"]);
        for (u, how) in found {
            t.row(vec![u.to_string(), how]);
        }
        print!("{}", t.render());
    }
    ExitCode::SUCCESS
}
