//! Bounded fuzzing, `STRATA_FUZZ_SECS` seconds (default 5) per target:
//! - the REST filter language: random and mutated query strings; a panic, or an accepted
//!   request that is anything but one SELECT over the one table, fails with the input;
//! - the Postgres protocol message decoder: valid frontend messages, mutated (bytes flipped,
//!   lengths rewritten, truncated, spliced) and random, decoded in every connection state; a
//!   panic fails with the input, and every valid message must decode to itself.
//!
//! (Malformed messages are also thrown at a live server by the CLI tests, `garbage.rs`.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

fn budget() -> Duration {
    let secs = std::env::var("STRATA_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    Duration::from_secs(secs)
}

/// xorshift64*: deterministic per seed, no dependency.
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
}

#[test]
fn rest_filters_never_panic_and_never_escape_the_select() {
    use strata_engine::datafusion::arrow::datatypes::{DataType, Field, Schema};
    use strata_engine::datafusion::sql::sqlparser::ast::Statement;
    use strata_server::rest::filter::Query;

    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
    ]);
    let keys = [
        "id", "name", "amount", "ok", "select", "order", "limit", "offset", "or", "and", "not.or",
        "nope", "", "id;", "ｉｄ",
    ];
    let atoms = [
        "eq.",
        "neq.",
        "gt.",
        "lt.",
        "gte.",
        "like.",
        "ilike.",
        "in.(",
        "is.",
        "not.",
        "null",
        "true",
        "1",
        "-7",
        "1e3",
        "NaN",
        "x'",
        "'; drop table t; --",
        "\"",
        "\\",
        ",",
        ")",
        "(",
        "*",
        ".",
        "id",
        "name",
        "desc",
        "nullslast",
        "and(",
        "or(",
        "\u{200b}",
        "ö",
        "%27",
        "$1",
        "/*",
        "*/",
    ];
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let deadline = Instant::now() + budget();
    let mut accepted = 0u64;
    while Instant::now() < deadline {
        let mut pairs = Vec::new();
        for _ in 0..=rng.below(4) {
            let key = keys[rng.below(keys.len())].to_string();
            let mut value = String::new();
            for _ in 0..rng.below(8) {
                value.push_str(atoms[rng.below(atoms.len())]);
            }
            pairs.push((key, value));
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let q = Query::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).ok()?;
            q.to_statement(["marts", "orders"], &schema, Some(3), 0, 101)
                .ok()
        }));
        let stmt = match outcome {
            Ok(s) => s,
            Err(_) => panic!("the filter parser panicked on {pairs:?}"),
        };
        let Some(stmt) = stmt else { continue };
        accepted += 1;
        // Whatever was accepted is one SELECT over the one table. (The engine runs this
        // syntax tree itself; it is never printed and parsed again.)
        let text = stmt.to_string();
        assert!(
            matches!(stmt, Statement::Query(_)),
            "{pairs:?} produced {text}"
        );
        let mut relations = Vec::new();
        let _ = strata_engine::datafusion::sql::sqlparser::ast::visit_relations(&stmt, |r| {
            relations.push(r.to_string());
            std::ops::ControlFlow::<()>::Continue(())
        });
        assert_eq!(
            relations,
            vec!["\"marts\".\"orders\""],
            "{pairs:?} produced {text}"
        );
    }
    assert!(accepted > 100, "only {accepted} accepted requests");
}

/// Valid frontend messages of every kind, each with the connection state that decodes it.
fn frontend_corpus() -> Vec<(State, pgwire::messages::PgWireFrontendMessage)> {
    use bytes::Bytes;
    use pgwire::messages::PgWireFrontendMessage as M;
    use pgwire::messages::cancel::CancelRequest;
    use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
    use pgwire::messages::extendedquery::{Bind, Close, Describe, Execute, Flush, Parse, Sync};
    use pgwire::messages::simplequery::Query;
    use pgwire::messages::startup::{
        PasswordMessageFamily, SASLInitialResponse, SASLResponse, SecretKey, SslRequest, Startup,
    };
    use pgwire::messages::terminate::Terminate;
    use pgwire::messages::{SslNegotiationMetaMessage, startup::Password};

    let mut startup = Startup::new();
    startup.parameters.insert("user".into(), "analyst".into());
    startup
        .parameters
        .insert("database".into(), "strata".into());
    startup
        .parameters
        .insert("application_name".into(), "psql".into());
    vec![
        (
            State::Ssl,
            M::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(SslRequest::new())),
        ),
        (State::Startup, M::Startup(startup)),
        (
            State::Startup,
            M::CancelRequest(CancelRequest::new(4242, SecretKey::I32(-17))),
        ),
        (
            State::Ready,
            M::PasswordMessageFamily(PasswordMessageFamily::Password(Password::new(
                "s3cret".into(),
            ))),
        ),
        (
            State::Ready,
            M::PasswordMessageFamily(PasswordMessageFamily::SASLInitialResponse(
                SASLInitialResponse::new(
                    "SCRAM-SHA-256".into(),
                    Some(Bytes::from_static(b"n,,n=,r=rOprNGfwEbeRWgbNEkqO")),
                ),
            )),
        ),
        (
            State::Ready,
            M::PasswordMessageFamily(PasswordMessageFamily::SASLResponse(SASLResponse::new(
                Bytes::from_static(
                    b"c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                ),
            ))),
        ),
        (
            State::Ready,
            M::Query(Query::new("SELECT 1; SELECT 'x'".into())),
        ),
        (
            State::Ready,
            M::Parse(Parse::new(
                Some("s1".into()),
                "SELECT $1::int + $2".into(),
                vec![23, 20],
            )),
        ),
        (
            State::Ready,
            M::Bind(Bind::new(
                Some("p1".into()),
                Some("s1".into()),
                vec![0, 1],
                vec![Some(Bytes::from_static(b"42")), None, Some(Bytes::new())],
                vec![1],
            )),
        ),
        (
            State::Ready,
            M::Describe(Describe::new(b'S', Some("s1".into()))),
        ),
        (
            State::Ready,
            M::Execute(Execute::new(Some("p1".into()), 100)),
        ),
        (State::Ready, M::Close(Close::new(b'P', None))),
        (State::Ready, M::Flush(Flush::new())),
        (State::Ready, M::Sync(Sync::new())),
        (
            State::Ready,
            M::CopyData(CopyData::new(Bytes::from_static(b"1\tan\\tescaped\n"))),
        ),
        (
            State::Ready,
            M::CopyFail(CopyFail::new("client gave up".into())),
        ),
        (State::Ready, M::CopyDone(CopyDone::new())),
        (State::Ready, M::Terminate(Terminate::new())),
    ]
}

/// Where a connection is: SSL negotiation, startup, or logged in.
#[derive(Clone, Copy, Debug)]
enum State {
    Ssl,
    Startup,
    Ready,
}

fn context(state: State) -> pgwire::messages::DecodeContext {
    let mut ctx =
        pgwire::messages::DecodeContext::new(pgwire::messages::ProtocolVersion::default());
    ctx.awaiting_frontend_ssl = matches!(state, State::Ssl);
    ctx.awaiting_frontend_startup = matches!(state, State::Ssl | State::Startup);
    ctx
}

/// Decodes `input` the way the server's codec does (advancing the state as the server
/// would), including the password-family coercions done at login.
fn decode_all(input: &[u8], state: State) -> usize {
    use pgwire::messages::PgWireFrontendMessage as M;
    let mut buf = bytes::BytesMut::from(input);
    let mut ctx = context(state);
    let mut decoded = 0;
    // Bounded: the SSL probe decodes without consuming (it only moves the state).
    for _ in 0..64 {
        match M::decode(&mut buf, &ctx) {
            Ok(Some(message)) => {
                decoded += 1;
                match message {
                    M::SslNegotiation(_) => ctx.awaiting_frontend_ssl = false,
                    M::Startup(_) | M::CancelRequest(_) => ctx.awaiting_frontend_startup = false,
                    M::PasswordMessageFamily(family) => {
                        let _ = family_coercions(family);
                    }
                    _ => {}
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    decoded
}

fn family_coercions(family: pgwire::messages::startup::PasswordMessageFamily) -> usize {
    use pgwire::messages::startup::PasswordMessageFamily as F;
    let F::Raw(body) = family else { return 0 };
    let raw = || F::Raw(body.clone());
    usize::from(raw().into_password().is_ok())
        + usize::from(raw().into_sasl_initial_response().is_ok())
        + usize::from(raw().into_sasl_response().is_ok())
}

#[test]
fn pgwire_decoder_never_panics_and_round_trips_valid_messages() {
    let corpus: Vec<(State, Vec<u8>)> = frontend_corpus()
        .into_iter()
        .map(|(state, message)| {
            let mut buf = bytes::BytesMut::new();
            message.encode(&mut buf).expect("corpus message encodes");
            // Valid messages decode to themselves (re-encoding gives the same bytes).
            let mut again = buf.clone();
            let decoded =
                pgwire::messages::PgWireFrontendMessage::decode(&mut again, &context(state))
                    .expect("valid message decodes")
                    .expect("valid message is complete");
            let mut re = bytes::BytesMut::new();
            decoded.encode(&mut re).expect("decoded message encodes");
            if !matches!(state, State::Ssl) {
                assert_eq!(re, buf, "{message:?} does not round-trip");
                assert!(again.is_empty(), "{message:?} left bytes behind");
            }
            (state, buf.to_vec())
        })
        .collect();

    let deadline = Instant::now() + budget();
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut cases = 0u64;
    let mut decoded = 0usize;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let (state, mut input) = corpus[rng.below(corpus.len())].clone();
            match rng.below(6) {
                // Flip a few bytes.
                0 => {
                    for _ in 0..=rng.below(4) {
                        if !input.is_empty() {
                            let i = rng.below(input.len());
                            input[i] = rng.next() as u8;
                        }
                    }
                }
                // Rewrite a length or count field with a hostile value.
                1 => {
                    let values: [i32; 8] = [0, 1, 3, 4, 5, -1, i32::MAX, i32::MIN];
                    let v = values[rng.below(values.len())].to_be_bytes();
                    let at = rng.below(input.len().saturating_sub(3).max(1));
                    for (k, b) in v.iter().enumerate() {
                        if let Some(slot) = input.get_mut(at + k) {
                            *slot = *b;
                        }
                    }
                }
                // Truncate the body but keep the declared length (the message looks complete
                // only if followed by another one).
                2 => {
                    let keep = rng.below(input.len() + 1);
                    input.truncate(keep);
                    let (_, next) = &corpus[rng.below(corpus.len())];
                    input.extend_from_slice(next);
                }
                // Two messages spliced, the first one shortened in its length field.
                3 => {
                    let (_, next) = &corpus[rng.below(corpus.len())];
                    input.extend_from_slice(next);
                    let at = usize::from(!matches!(state, State::Ssl | State::Startup));
                    if input.len() >= at + 4 {
                        let len = i32::from_be_bytes(input[at..at + 4].try_into().unwrap());
                        let shorter = (len - 1 - rng.below(8) as i32).to_be_bytes();
                        input[at..at + 4].copy_from_slice(&shorter);
                    }
                }
                // Random bytes behind a plausible type byte and length.
                4 => {
                    let n = rng.below(40);
                    input = vec![b"QPBDECSHXdcfp"[rng.below(13)]];
                    input.extend_from_slice(&((n as i32) + 4 - rng.below(6) as i32).to_be_bytes());
                    input.extend((0..n).map(|_| rng.next() as u8));
                }
                // Pure noise.
                _ => input = (0..rng.below(64)).map(|_| rng.next() as u8).collect(),
            }
            let states = [state, State::Ssl, State::Startup, State::Ready];
            let the_state = states[rng.below(states.len())];
            let outcome = catch_unwind(AssertUnwindSafe(|| decode_all(&input, the_state)));
            match outcome {
                Ok(n) => decoded += n,
                Err(_) => panic!(
                    "pgwire decoder panicked in state {the_state:?} on input {}",
                    hex(&input)
                ),
            }
            cases += 1;
        }
    }
    assert!(cases > 1000, "only {cases} inputs in the time budget");
    assert!(
        decoded > 0,
        "no mutated input decoded at all: the mutations are off"
    );
    eprintln!("pgwire decoder: {cases} inputs, {decoded} messages decoded, no panic");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
