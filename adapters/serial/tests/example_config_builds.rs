//! The annotated example in config/examples/serial.toml stays valid.

use ferrogate_sdk::testing::build;
use ferrogate_serial::SerialKind;

#[test]
fn the_example_config_builds() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../config/examples/serial.toml"
    );
    let text = std::fs::read_to_string(path).expect("read the example config");
    let built = build(&SerialKind, &text, &[]).unwrap_or_else(|issues| {
        panic!(
            "{}",
            issues
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    let names: Vec<&str> = built.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "serial/scale-1",
            "serial/climate-3",
            "serial/gps",
            "serial/flow-2"
        ]
    );
    assert!(built[1].notes.iter().any(|n| n.contains("19200 baud")));
}
