//! The protocols this build knows: each adapter crate's [`AdapterKind`],
//! by the top-level TOML key it owns.

use ferrogate_sdk::AdapterKind;

/// Every adapter kind, in the order `config check` reports them.
pub fn all() -> Vec<Box<dyn AdapterKind>> {
    vec![
        Box::new(ferrogate_simulator::SimulatorKind),
        Box::new(ferrogate_modbus::ModbusKind),
        Box::new(ferrogate_coap::CoapKind),
        Box::new(ferrogate_lwm2m::Lwm2mKind),
        Box::new(ferrogate_serial::SerialKind),
    ]
}
