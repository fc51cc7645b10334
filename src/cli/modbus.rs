//! `ferrogate modbus read|probe|scan|write`: talk to a Modbus device
//! directly, no daemon needed. The client side is tokio-modbus, independent of the
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
use tokio_modbus::client::{Context, Reader, Writer, rtu, tcp};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use super::EXIT_FAILED;
use super::output::Table;

/// Where the device is.
#[derive(Debug, Clone, Args)]
pub struct Link {
    /// Modbus TCP: `HOST[:PORT]`, port 502 when left out.
    #[arg(long, group = "link", value_name = "HOST[:PORT]")]
    pub tcp: Option<String>,
    /// RTU on a serial port, e.g. /dev/ttyUSB0.
    #[arg(long, group = "link", value_name = "PORT")]
    pub rtu: Option<String>,
    /// RTU framing over TCP (serial device servers, 4G DTUs): `HOST:PORT`.
    #[arg(long, group = "link", value_name = "HOST:PORT")]
    pub rtu_over_tcp: Option<String>,
    /// Serial line speed (RTU).
    #[arg(long, default_value_t = 9600)]
    pub baud: u32,
    /// Serial parity (RTU); even is the Modbus serial line default (8E1),
    /// as in the adapter.
    #[arg(long, value_enum, default_value_t = ParityArg::Even)]
    pub parity: ParityArg,
    /// Serial stop bits (RTU): 1 or 2.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: u8,
    /// How long to wait for each answer (per request; per unit in a scan), e.g. 500ms.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Serial parity.
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
    /// Unit id (slave address), 1-247; 255 or 0 for some TCP devices.
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Register or bit area; without it, the address is a holding register
    /// or a Modicon reference (30001, 40001, ...).
    #[arg(long, value_enum)]
    pub area: Option<AreaArg>,
    /// Zero-based address, or a Modicon reference (e.g. 40001).
    #[arg(long)]
    pub address: u32,
    /// Registers (or bits) to read; with --type, values of that type.
    #[arg(long, default_value_t = 1)]
    pub count: u16,
}

/// Most registers one read may ask for (FC 3/4), and bits (FC 1/2), by
/// the Modbus application protocol (a 253-byte PDU).
const MAX_READ_REGISTERS: u16 = 125;
const MAX_READ_BITS: u16 = 2000;
/// Most registers (FC 16) and coils (FC 15) one write may carry.
const MAX_WRITE_REGISTERS: usize = 123;
const MAX_WRITE_COILS: usize = 1968;

/// Refuses a read the protocol cannot carry, saying the limit.
fn check_read_count(area: Area, count: u16) -> Result<(), String> {
    let (limit, what) = match area {
        Area::Coil | Area::Discrete => (MAX_READ_BITS, "bits"),
        Area::Input | Area::Holding => (MAX_READ_REGISTERS, "registers"),
    };
    if count == 0 {
        return Err(format!("nothing to read: --count must be 1..={limit}"));
    }
    if count > limit {
        return Err(format!(
            "{count} {what} is more than one Modbus read can carry (at most {limit} {what}); read in parts"
        ));
    }
    Ok(())
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
        let addr = resolve(&with_default_port(addr, 502)).await?;
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

/// `host` -> `host:502`, `::1` -> `[::1]:502`; an address with a port stays.
fn with_default_port(addr: &str, port: u16) -> String {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return addr.to_string();
    }
    if addr.parse::<std::net::Ipv6Addr>().is_ok() {
        return format!("[{addr}]:{port}");
    }
    if addr.starts_with('[') && addr.ends_with(']') {
        return format!("{addr}:{port}");
    }
    match addr.rsplit_once(':') {
        Some((_, p)) if p.parse::<u16>().is_ok() => addr.to_string(),
        _ => format!("{addr}:{port}"),
    }
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
    check_read_count(area, registers).map_err(|e| ("bad_request".to_string(), e))?;
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
        report: Default::default(),
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

/// Repeating a read, like mbpoll: every `every`, `times` times (or until
/// interrupted).
#[derive(Debug, Clone, Args)]
pub struct Poll {
    /// Read again every this long (e.g. 1s) until interrupted; each read is
    /// printed with its time.
    #[arg(long, value_name = "PERIOD", value_parser = parse_duration)]
    pub poll: Option<Duration>,
    /// With --poll: stop after this many reads.
    #[arg(long, value_name = "N", requires = "poll")]
    pub polls: Option<u64>,
}

/// `modbus read`, once or repeated with `--poll`. A failed read in a poll
/// is printed and the polling goes on; the exit code is the last read's.
pub fn read_command(
    link: &Link,
    range: &Range,
    ty: Option<TypeArg>,
    ord: OrderArg,
    poll: &Poll,
    as_json: bool,
) -> ExitCode {
    let Some(every) = poll.poll else {
        return read_and_print(link, range, ty, ord, as_json, false);
    };
    let mut done = 0;
    loop {
        let next = std::time::Instant::now() + every;
        let code = read_and_print(link, range, ty, ord, as_json, true);
        done += 1;
        if poll.polls.is_some_and(|n| done >= n) {
            return code;
        }
        // Pacing the poll loop (not synchronisation): wait out the period.
        std::thread::sleep(next.saturating_duration_since(std::time::Instant::now()));
    }
}

fn read_and_print(
    link: &Link,
    range: &Range,
    ty: Option<TypeArg>,
    ord: OrderArg,
    as_json: bool,
    stamped: bool,
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
        let mut result = json!({"unit": range.unit, "area": area.as_str(), "values": values});
        if stamped {
            result["ts"] = ferrogate_sdk::Timestamp::now().0.into();
        }
        println!("{}", json!({"ok": true, "result": result}));
    } else {
        if stamped {
            println!(
                "-- {}",
                super::output::utc(ferrogate_sdk::Timestamp::now().0)
            );
        }
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
            json!({"ok": true, "result": {"unit": range.unit, "area": area.as_str(), "registers": registers, "interpretations": interpretations}})
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

/// The unit ids of a scan, in order.
#[derive(Debug, Clone)]
pub struct Units(pub Vec<u8>);

impl Units {
    pub fn parse(s: &str) -> Result<Units, String> {
        parse_units(s).map(Units)
    }
}

/// The unit ids of a scan: `1-32`, `5`, or a list `1,3,10-12`.
fn parse_units(s: &str) -> Result<Vec<u8>, String> {
    let mut units = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let number = |n: &str| {
            n.trim()
                .parse::<u8>()
                .map_err(|_| format!("`{n}` is not a unit id (0-255)"))
        };
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (number(lo)?, number(hi)?),
            None => (number(part)?, number(part)?),
        };
        if lo > hi {
            return Err(format!("`{part}`: the range goes down"));
        }
        units.extend(lo..=hi);
    }
    units.sort_unstable();
    units.dedup();
    Ok(units)
}

/// What one unit's answer says: `Some(result)` when the unit is there. An
/// exception is an answer, except exception 11 (gateway target device
/// failed to respond) and 10 (gateway path unavailable): a TCP gateway
/// saying the unit behind it is absent.
fn presence(answer: &Result<Data, ReadError>) -> Option<String> {
    match answer {
        Ok(_) => Some("answered".into()),
        Err(ReadError::Exception(
            ExceptionCode::GatewayTargetDevice | ExceptionCode::GatewayPathUnavailable,
        )) => None,
        Err(ReadError::Exception(code)) => Some(format!(
            "answered with exception {} ({code})",
            u8::from(*code)
        )),
        Err(ReadError::Timeout | ReadError::Transport(_)) => None,
    }
}

/// Progress of a scan on stderr, only when stderr is a terminal.
struct Progress {
    on: bool,
    started: std::time::Instant,
    total: usize,
}

impl Progress {
    fn new(total: usize) -> Progress {
        use std::io::IsTerminal;
        Progress {
            on: std::io::stderr().is_terminal(),
            started: std::time::Instant::now(),
            total,
        }
    }

    fn show(&self, tried: usize, found: usize) {
        if !self.on {
            return;
        }
        let per_unit = self.started.elapsed() / tried.max(1) as u32;
        let left = per_unit * (self.total - tried) as u32;
        eprint!(
            "\r\x1b[Ktried {tried}/{}, found {found}, about {} s left",
            self.total,
            left.as_secs()
        );
    }

    fn clear(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

/// `modbus scan`: which unit ids answer on a line. Each unit found is
/// printed as it answers; on a terminal a progress line shows units tried,
/// found and the time left.
pub fn scan_command(link: &Link, units: &[u8], address: u16, as_json: bool) -> ExitCode {
    use std::io::Write;
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(as_json, "internal", &e),
    };
    let progress = Progress::new(units.len());
    if !as_json {
        println!("UNIT  RESULT");
    }
    let found = rt.block_on(async {
        let mut found = Vec::new();
        let mut ctx: Option<Context> = None;
        for (i, &unit) in units.iter().enumerate() {
            progress.show(i, found.len());
            if ctx.is_none() {
                ctx = Some(connect(link, unit).await?);
            }
            let Some(c) = ctx.as_mut() else { continue };
            c.set_slave(Slave(unit));
            let answer = read(c, Area::Holding, address, 1, link.timeout).await;
            if let Some(result) = presence(&answer) {
                if !as_json {
                    progress.clear();
                    println!("{unit:<4}  {result}");
                    let _ = std::io::stdout().flush();
                }
                found.push((unit, result));
            }
            // A late reply would desynchronise the line: start afresh.
            if matches!(answer, Err(ReadError::Timeout | ReadError::Transport(_))) {
                ctx = None;
            }
        }
        Ok::<_, String>(found)
    });
    progress.clear();
    let found = match found {
        Ok(f) => f,
        Err(e) => return fail(as_json, "connect", &e),
    };
    if as_json {
        let list: Vec<Json> = found
            .iter()
            .map(|(u, how)| json!({"unit": u, "result": how}))
            .collect();
        println!(
            "{}",
            json!({"ok": true, "result": {"tried": units.len(), "units": list}})
        );
    } else {
        println!("{} of {} units answered", found.len(), units.len());
    }
    ExitCode::SUCCESS
}

/// The areas a write can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum WriteAreaArg {
    Holding,
    Coil,
}

/// What to write: `modbus write ... --address 10 42 43` writes two
/// holding registers; `--area coil --address 3 on` one coil.
#[derive(Debug, Clone, Args)]
pub struct WriteTarget {
    /// Unit id (slave address).
    #[arg(long, default_value_t = 1)]
    pub unit: u8,
    /// Holding registers (FC 6 for one, FC 16 for several) or coils (FC 5 / FC 15).
    #[arg(long, value_enum, default_value_t = WriteAreaArg::Holding)]
    pub area: WriteAreaArg,
    /// Zero-based address of the first register or coil, or a Modicon
    /// reference (40001 = holding register 0).
    #[arg(long)]
    pub address: u32,
    /// Encode each value as this type (several registers each) instead of
    /// one raw 16-bit register.
    #[arg(long = "type", value_enum)]
    pub ty: Option<TypeArg>,
    /// Byte order of --type values.
    #[arg(long, value_enum, default_value = "ABCD")]
    pub order: OrderArg,
    /// The values: register numbers (0-65535, or -32768..-1 as i16), typed
    /// numbers with --type, or for coils on/off, 1/0, true/false.
    #[arg(required = true, num_args = 1.., allow_negative_numbers = true)]
    pub values: Vec<String>,
}

/// What a write puts on the wire.
#[derive(Debug, PartialEq)]
enum Payload {
    Registers(Vec<u16>),
    Coils(Vec<bool>),
}

impl WriteTarget {
    fn address(&self) -> Result<u16, String> {
        if self.address >= 10_001 {
            let (area, address) = resolve_modicon(self.address)?;
            let wanted = match self.area {
                WriteAreaArg::Holding => Area::Holding,
                WriteAreaArg::Coil => Area::Coil,
            };
            if area != wanted {
                return Err(format!(
                    "{} is a {} reference; only holding registers (4xxxx) and coils (--area coil) can be written",
                    self.address,
                    area.as_str()
                ));
            }
            return Ok(address);
        }
        u16::try_from(self.address).map_err(|_| format!("address {} is above 65535", self.address))
    }

    fn payload(&self) -> Result<Payload, String> {
        if self.area == WriteAreaArg::Coil {
            let coils = self
                .values
                .iter()
                .map(|v| match v.to_ascii_lowercase().as_str() {
                    "1" | "on" | "true" => Ok(true),
                    "0" | "off" | "false" => Ok(false),
                    _ => Err(format!(
                        "`{v}` is not a coil value (on/off, 1/0, true/false)"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if coils.len() > MAX_WRITE_COILS {
                return Err(format!(
                    "{} coils is more than one Modbus write can carry (at most {MAX_WRITE_COILS})",
                    coils.len()
                ));
            }
            return Ok(Payload::Coils(coils));
        }
        let mut words = Vec::new();
        for v in &self.values {
            match self.ty {
                None => {
                    let n: i32 = v.parse().map_err(|_| {
                        format!("`{v}` is not a register value (0-65535 or -32768..-1)")
                    })?;
                    let word = match n {
                        0..=65_535 => n as u16,
                        -32_768..=-1 => n as i16 as u16,
                        _ => return Err(format!("`{v}` does not fit a 16-bit register")),
                    };
                    words.push(word);
                }
                Some(t) => {
                    let value = if matches!(t, TypeArg::F32 | TypeArg::F64) {
                        v.parse::<f64>().ok().map(Value::Float)
                    } else {
                        v.parse::<i64>().ok().map(Value::Int)
                    }
                    .ok_or_else(|| format!("`{v}` is not a {} number", point_type(t).name()))?;
                    let bytes = codec::encode(&point(0, point_type(t), order(self.order)), &value)
                        .map_err(|e| format!("`{v}`: {e}"))?;
                    words.extend(bytes.chunks(2).map(|b| u16::from_be_bytes([b[0], b[1]])));
                }
            }
        }
        if words.len() > MAX_WRITE_REGISTERS {
            return Err(format!(
                "{} registers is more than one Modbus write can carry (at most {MAX_WRITE_REGISTERS})",
                words.len()
            ));
        }
        Ok(Payload::Registers(words))
    }
}

/// `modbus write`: registers or coils, with the function code a tech
/// would expect (6 for one register, 16 for several, 5 / 15 for coils).
pub fn write_command(link: &Link, target: &WriteTarget, as_json: bool) -> ExitCode {
    let (address, payload) = match target.address().and_then(|a| Ok((a, target.payload()?))) {
        Ok(x) => x,
        Err(e) => return fail(as_json, "bad_request", &e),
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(as_json, "internal", &e),
    };
    let written = rt.block_on(async {
        let mut ctx = connect(link, target.unit)
            .await
            .map_err(|e| ("connect".to_string(), e))?;
        let (count, what, function) = match &payload {
            Payload::Registers(w) if w.len() == 1 => (1, "register", 6),
            Payload::Registers(w) => (w.len(), "registers", 16),
            Payload::Coils(c) if c.len() == 1 => (1, "coil", 5),
            Payload::Coils(c) => (c.len(), "coils", 15),
        };
        let call = async {
            match (&payload, function) {
                (Payload::Registers(w), 6) => ctx.write_single_register(address, w[0]).await,
                (Payload::Registers(w), _) => ctx.write_multiple_registers(address, w).await,
                (Payload::Coils(c), 5) => ctx.write_single_coil(address, c[0]).await,
                (Payload::Coils(c), _) => ctx.write_multiple_coils(address, c).await,
            }
        };
        match tokio::time::timeout(link.timeout, call).await {
            Err(_) => Err((
                "timeout".to_string(),
                format!(
                    "unit {} did not answer within {:?}",
                    target.unit, link.timeout
                ),
            )),
            Ok(Err(e)) => Err(("io".to_string(), e.to_string())),
            Ok(Ok(Err(code))) => Err((
                "device_exception".to_string(),
                ReadError::Exception(code).to_string(),
            )),
            Ok(Ok(Ok(()))) => Ok((count, what, function)),
        }
    });
    let (count, what, function) = match written {
        Ok(w) => w,
        Err((code, message)) => return fail(as_json, &code, &message),
    };
    let area = match target.area {
        WriteAreaArg::Holding => "holding",
        WriteAreaArg::Coil => "coil",
    };
    if as_json {
        println!(
            "{}",
            json!({"ok": true, "result": {"unit": target.unit, "area": area, "address": address, "written": count, "function": function}})
        );
    } else {
        println!(
            "unit {}: wrote {count} {what} at {area} {address} (1-based {}) with function {function}",
            target.unit,
            u32::from(address) + 1
        );
    }
    ExitCode::SUCCESS
}

/// `ferrogate modbus plan --config DIR [DEVICE]`: the requests each poll
/// cycle sends, from the configuration, as the adapter would run it. An
/// invalid configuration is reported as `config check` does.
pub fn plan_command(dir: &std::path::Path, device: Option<&str>, as_json: bool) -> ExitCode {
    use ferrogate_modbus::plan;
    let plans = match crate::config::with_section(dir, "modbus", plan::plan) {
        Ok(Ok(plans)) => plans,
        Ok(Err(_)) | Err(_) => {
            return super::config_check(dir, super::CheckOptions::default(), as_json);
        }
    };
    let plans: Vec<plan::LinePlan> = plans
        .into_iter()
        .map(|mut line| {
            line.devices
                .retain(|d| device.is_none_or(|name| d.device == name));
            line
        })
        .filter(|line| !line.devices.is_empty())
        .collect();
    if let Some(name) = device
        && plans.is_empty()
    {
        return fail(
            as_json,
            "unknown_device",
            &format!("no Modbus device `{name}` in {}", dir.display()),
        );
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if as_json {
        let lines: Vec<Json> = plans
            .iter()
            .map(|line| {
                json!({
                    "connection": line.connection,
                    "transport": line.transport,
                    "load": line.load,
                    "devices": line.devices.iter().map(|d| json!({
                        "device": d.device,
                        "unit": d.unit,
                        "groups": d.groups.iter().map(|g| json!({
                            "period_ms": ms(g.period),
                            "line_time_ms": g.line_time.map(ms),
                            "requests": g.requests.iter().map(|r| json!({
                                "function": r.function,
                                "area": r.area,
                                "unit": d.unit,
                                "start": r.start,
                                "count": r.count,
                                "points": r.points,
                                "bridged": r.bridged.iter().map(|(a, b)| json!([a, b])).collect::<Vec<_>>(),
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", json!({"ok": true, "result": {"connections": lines}}));
        return ExitCode::SUCCESS;
    }
    for line in &plans {
        match line.load {
            Some(load) => println!(
                "connection {} ({}): polls take {:.1} % of the line",
                line.connection,
                line.transport,
                load * 100.0
            ),
            None => println!("connection {} ({})", line.connection, line.transport),
        }
        let mut t = Table::new(&[
            "DEVICE",
            "UNIT",
            "EVERY",
            "FC",
            "START",
            "COUNT",
            "POINTS",
            "BRIDGED",
            "LINE TIME",
        ]);
        for d in &line.devices {
            for g in &d.groups {
                for (i, r) in g.requests.iter().enumerate() {
                    let bridged: Vec<String> = r
                        .bridged
                        .iter()
                        .map(|(a, b)| {
                            if a == b {
                                a.to_string()
                            } else {
                                format!("{a}-{b}")
                            }
                        })
                        .collect();
                    let line_time = match (i, g.line_time) {
                        (0, Some(lt)) => format!("{:.1} ms of {:?}", ms(lt), g.period),
                        _ => String::new(),
                    };
                    t.row(vec![
                        d.device.clone(),
                        d.unit.to_string(),
                        format!("{:?}", g.period),
                        format!("{:02} {}", r.function, r.area),
                        r.start.to_string(),
                        r.count.to_string(),
                        r.points.join(", "),
                        if bridged.is_empty() {
                            "-".into()
                        } else {
                            bridged.join(", ")
                        },
                        line_time,
                    ]);
                }
            }
        }
        print!("{}", t.render());
        println!();
    }
    println!(
        "Addresses a device refuses (exception 2) are learned while it is polled: this is the first cycle's plan."
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tcp_address_without_a_port_gets_502() {
        assert_eq!(with_default_port("10.0.0.5", 502), "10.0.0.5:502");
        assert_eq!(with_default_port("meter.local", 502), "meter.local:502");
        assert_eq!(with_default_port("10.0.0.5:1502", 502), "10.0.0.5:1502");
        assert_eq!(with_default_port("::1", 502), "[::1]:502");
        assert_eq!(with_default_port("[::1]", 502), "[::1]:502");
        assert_eq!(with_default_port("[::1]:5020", 502), "[::1]:5020");
    }

    #[test]
    fn unit_ranges() {
        assert_eq!(parse_units("1-4").unwrap(), [1, 2, 3, 4]);
        assert_eq!(parse_units("7").unwrap(), [7]);
        assert_eq!(parse_units("3,1-2,2").unwrap(), [1, 2, 3]);
        assert!(parse_units("5-1").unwrap_err().contains("goes down"));
        assert!(parse_units("1-300").unwrap_err().contains("`300`"));
    }

    #[test]
    fn a_gateway_saying_the_unit_is_absent_is_not_an_answer() {
        let exception = |c| Err(ReadError::Exception(c));
        assert_eq!(
            presence(&exception(ExceptionCode::GatewayTargetDevice)),
            None
        );
        assert_eq!(
            presence(&exception(ExceptionCode::GatewayPathUnavailable)),
            None
        );
        assert_eq!(presence(&Err(ReadError::Timeout)), None);
        assert!(
            presence(&exception(ExceptionCode::IllegalDataAddress))
                .unwrap()
                .contains("exception 2")
        );
        assert_eq!(
            presence(&Ok(Data::Registers(vec![1]))).as_deref(),
            Some("answered")
        );
    }

    #[test]
    fn counts_over_the_protocol_limits_are_refused_with_the_limit() {
        assert!(check_read_count(Area::Holding, 125).is_ok());
        let err = check_read_count(Area::Holding, 126).unwrap_err();
        assert!(err.contains("at most 125 registers"), "{err}");
        assert!(check_read_count(Area::Coil, 2000).is_ok());
        assert!(
            check_read_count(Area::Coil, 2001)
                .unwrap_err()
                .contains("2000 bits")
        );
        let target = |area, values: Vec<&str>| WriteTarget {
            unit: 1,
            area,
            address: 0,
            ty: None,
            order: OrderArg::Abcd,
            values: values.into_iter().map(String::from).collect(),
        };
        let many = vec!["1"; 124];
        assert!(
            target(WriteAreaArg::Holding, many)
                .payload()
                .unwrap_err()
                .contains("at most 123")
        );
        assert_eq!(
            target(WriteAreaArg::Holding, vec!["-1", "7"]).payload(),
            Ok(Payload::Registers(vec![0xffff, 7]))
        );
        assert_eq!(
            target(WriteAreaArg::Coil, vec!["on", "0"]).payload(),
            Ok(Payload::Coils(vec![true, false]))
        );
        let mut f = target(WriteAreaArg::Holding, vec!["1234.5"]);
        f.ty = Some(TypeArg::F32);
        assert_eq!(f.payload(), Ok(Payload::Registers(vec![0x449a, 0x5000])));
    }
}
