//! The protocols this build knows: each adapter crate's [`AdapterKind`],
//! by the top-level TOML key it owns.

use ferrogate_sdk::AdapterKind;

/// Every adapter kind, in the order `config check` reports them.
pub fn all() -> Vec<Box<dyn AdapterKind>> {
    vec![Box::new(crate::simulator::SimulatorKind)]
}
