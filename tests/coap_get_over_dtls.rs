//! `ferrogate coap get coaps://… --psk-identity … --psk-key …` against
//! libcoap's own DTLS servers (`coap-server-gnutls`, `coap-server-openssl`,
//! Debian `libcoap3-bin`) with a pre-shared key: the gateway's DTLS client
//! (TLS_PSK_WITH_AES_128_CCM_8) gets 2.05; a wrong key gets no answer and
//! exit 1.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// libcoap 4.3.1's server takes the key as text.
const KEY_TEXT: &str = "server-secret-16";

struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, key_hex: &str, timeout: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrogate"))
        .args(["coap", "get", &format!("coaps://127.0.0.1:{port}/")])
        .args(["--psk-identity", "cli-tech", "--psk-key", key_hex])
        .args(["--timeout", timeout])
        .output()
        .expect("run ferrogate")
}

/// A libcoap server with `-k`; it serves DTLS on its port + 1.
fn server(program: &str) -> (Peer, u16) {
    let bin = common::require(program, "libcoap3-bin");
    let port = common::free_udp_port_below_ephemeral();
    let child = Command::new(bin)
        .args(["-A", "127.0.0.1", "-p", &port.to_string(), "-k", KEY_TEXT])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the libcoap server");
    (Peer(child), port + 1)
}

#[test]
fn coaps_get_with_a_psk_against_libcoap_servers() {
    let key: String = KEY_TEXT.bytes().map(|b| format!("{b:02x}")).collect();
    for program in ["coap-server-gnutls", "coap-server-openssl"] {
        let (_server, port) = server(program);
        let mut last = None;
        common::wait_for(
            &format!("{program} answering over DTLS"),
            Duration::from_secs(15),
            || {
                let out = get(port, &key, "2s");
                let ok = out.status.success();
                last = Some(out);
                ok
            },
        );
        let out = last.expect("an answer");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("2.05") && text.contains("libcoap"),
            "{program}: {text}"
        );

        let wrong = get(port, "00112233445566778899aabbccddeeff", "2s");
        assert_eq!(wrong.status.code(), Some(1), "{program}: {wrong:?}");
        assert!(wrong.stdout.is_empty(), "{program}: {wrong:?}");
    }
}
