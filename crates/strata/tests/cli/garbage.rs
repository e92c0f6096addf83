//! Bad input on the wire: malformed and truncated Postgres protocol messages (before and
//! after login), random bytes on the HTTP and Flight SQL ports, from several clients at
//! once for `STRATA_FUZZ_SECS` seconds (default 5). Each bad connection may end; the server
//! must keep serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::serve::{PASSWORD, psql_ok, serve, setup};

/// xorshift64*: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![tag];
    b.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    b.extend_from_slice(body);
    b
}

fn startup(user: &str) -> Vec<u8> {
    let params = format!("user\0{user}\0database\0strata\0\0");
    let mut b = ((8 + params.len()) as i32).to_be_bytes().to_vec();
    b.extend_from_slice(&196608i32.to_be_bytes());
    b.extend_from_slice(params.as_bytes());
    b
}

/// Well-formed messages of the extended and simple protocols, to be mutated.
fn seeds() -> Vec<Vec<u8>> {
    let mut bind = b"\0s1\0".to_vec();
    for v in [1i16, 0, 1] {
        bind.extend_from_slice(&v.to_be_bytes());
    }
    bind.extend_from_slice(&2i32.to_be_bytes());
    bind.extend_from_slice(b"42");
    bind.extend_from_slice(&0i16.to_be_bytes());
    vec![
        msg(b'Q', b"select 1\0"),
        msg(b'Q', b"select * from marts.orders\0"),
        msg(b'P', b"s1\0select $1\0\0\x01\0\0\0\x17"),
        msg(b'B', &bind),
        msg(b'E', b"\0\0\0\0\0"),
        msg(b'D', b"Ss1\0"),
        msg(b'C', b"Ps1\0"),
        msg(b'S', b""),
        msg(b'H', b""),
        msg(b'F', b"\0\0\0\x01"),
        msg(b'd', b"copy data"),
    ]
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..=rng.below(3) {
        out.extend_from_slice(&seeds[rng.below(seeds.len())]);
    }
    for _ in 0..=rng.below(4) {
        if out.is_empty() {
            break;
        }
        let i = rng.below(out.len());
        match rng.below(4) {
            0 => out[i] = rng.next() as u8,
            1 => out.truncate(i),
            2 => out.insert(i, rng.next() as u8),
            _ => {
                let v = [0i32, -1, 3, 4, 5, i32::MAX, 1 << 20][rng.below(7)];
                let end = (i + 4).min(out.len());
                out.splice(i..end, v.to_be_bytes());
            }
        }
    }
    out
}

/// Reads backend messages until ReadyForQuery (`Z`) or the connection ends.
fn until_ready(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut at = 0;
        while buf.len() >= at + 5 {
            let len = i32::from_be_bytes(buf[at + 1..at + 5].try_into().unwrap()) as usize;
            if buf[at] == b'Z' {
                return true;
            }
            at += 1 + len;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One bad client: garbage before login, or a login followed by mutated messages.
fn bad_client(port: u16, rng: &mut Rng, seeds: &[Vec<u8>]) {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
    if rng.below(3) == 0 {
        let mut pre = if rng.below(2) == 0 {
            startup("alice")
        } else {
            Vec::new()
        };
        let n = rng.below(48);
        pre.extend(rng.bytes(n));
        let _ = s.write_all(&pre);
    } else {
        if s.write_all(&startup("alice")).is_err() {
            return;
        }
        let mut ask = [0u8; 9];
        if s.read_exact(&mut ask).is_err() || ask[0] != b'R' {
            return;
        }
        let mut pw = PASSWORD.as_bytes().to_vec();
        pw.push(0);
        if s.write_all(&msg(b'p', &pw)).is_err() || !until_ready(&mut s) {
            return;
        }
        for _ in 0..=rng.below(4) {
            if s.write_all(&mutate(rng, seeds)).is_err() {
                break;
            }
        }
    }
    let mut sink = [0u8; 4096];
    let _ = s.read(&mut sink);
}

fn random_bytes_to(port: u16, rng: &mut Rng) {
    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let n = rng.below(512);
        let mut bytes = if rng.below(2) == 0 {
            b"GET /api/v1/tables HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n".to_vec()
        } else {
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()
        };
        bytes.extend(rng.bytes(n));
        let _ = s.write_all(&bytes);
        let mut sink = [0u8; 1024];
        let _ = s.read(&mut sink);
    }
}

#[test]
fn malformed_messages_end_their_connection_not_the_server() {
    let (_tmp, dir) = setup();
    let s = serve(&dir);
    let secs = std::env::var("STRATA_FUZZ_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let (pg, http, flight) = (s.port, s.http_port, s.flight_port);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let seeds = seeds();
                let mut rng =
                    Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
                let mut clients = 0u32;
                while Instant::now() < deadline {
                    match rng.below(5) {
                        0 => random_bytes_to(http, &mut rng),
                        1 => random_bytes_to(flight, &mut rng),
                        _ => bad_client(pg, &mut rng, &seeds),
                    }
                    clients += 1;
                }
                clients
            })
        })
        .collect();
    let clients: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(clients > 50, "only {clients} bad clients ran");

    // Everyone else is still served, on every surface.
    let out = psql_ok(
        s.port,
        "alice",
        PASSWORD,
        "SELECT count(*) FROM marts.orders",
    );
    assert_eq!(out.trim(), "2");
    let o = std::process::Command::new("curl")
        .args(["-sf", &format!("http://127.0.0.1:{http}/api/v1/health")])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"ok\""));
    let mut f = TcpStream::connect(("127.0.0.1", flight)).expect("Flight SQL still accepts");
    f.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
}
