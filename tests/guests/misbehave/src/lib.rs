//! `misbehave`: a test guest (no models) that does what a host must survive, one route each:
//! - `/trap`: panics with "guest panicked on purpose" (also written to stderr first);
//! - `/loop`: spins forever (the time limit must stop it);
//! - `/recurse`: recurses until the stack overflows;
//! - `/memory`: allocates 64 MiB chunks until allocation fails;
//! - `/huge-output`: a 200 with a 64 MiB body, streamed in 64 KiB chunks so that it does not
//!   need 64 MiB of guest memory (the manifest allows 64 MiB);
//! - `/sleep?ms=N`: waits N ms on the wasi monotonic clock (a host-side block), or with
//!   `&mode=busy` spins on the clock instead (guest-side CPU), then 200 `slept N ms`;
//! - `/ok`: 200 `ok`. Other paths: 404.

use std::hint::black_box;

use nimbus_guest::wasi::clocks::monotonic_clock;
use nimbus_guest::wasi::http::types::{IncomingRequest, ResponseOutparam};
use nimbus_guest::{Handler, Request, Response};

/// Size of `/huge-output`'s body.
const HUGE_OUTPUT: usize = 64 << 20;
/// Chunk size `/huge-output` writes.
const CHUNK: usize = 64 << 10;

/// The exported handler: streams `/huge-output` itself, hands every other request to the
/// buffered [`Misbehave`] handler.
struct Raw;

impl nimbus_guest::wasi::exports::wasi::http::incoming_handler::Guest for Raw {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        if path.split('?').next() == Some("/huge-output") {
            let headers = [(
                "content-type".to_string(),
                b"application/octet-stream".to_vec(),
            )];
            let chunks = (0..HUGE_OUTPUT / CHUNK).map(|_| vec![b'x'; CHUNK]);
            nimbus_guest::http::respond_streaming(response_out, 200, &headers, chunks);
        } else {
            nimbus_guest::http::serve::<Misbehave>(request, response_out);
        }
    }
}

nimbus_guest::wasi::http::proxy::export!(Raw with_types_in nimbus_guest::wasi);

struct Misbehave;

impl Handler for Misbehave {
    fn handle(req: Request) -> Response {
        match req.path_only() {
            "/ok" => Response::text(200, "ok"),
            "/trap" => {
                eprintln!("guest panicked on purpose");
                panic!("guest panicked on purpose");
            }
            "/loop" => spin_forever(),
            "/recurse" => Response::text(200, format!("recursion ended at {}", recurse(0))),
            "/memory" => exhaust_memory(),
            "/sleep" => sleep(&req),
            other => Response::error(404, "not_found", &format!("no route {other}")),
        }
    }
}

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Recurses with a 1 KiB frame kept on the stack until the stack overflows. The test on
/// `u64::MAX` never holds; it keeps the compiler from calling this unconditional recursion.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 128]);
    if black_box(depth) == u64::MAX {
        return frame[0];
    }
    recurse(depth + 1).wrapping_add(frame[127])
}

fn exhaust_memory() -> Response {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page so the memory is really committed.
        let chunk = vec![1u8; 64 << 20];
        held.push(black_box(chunk));
        eprintln!("misbehave: holding {} MiB", held.len() * 64);
    }
}

fn sleep(req: &Request) -> Response {
    let Some(ms) = req.query_param("ms").and_then(|v| v.parse::<u64>().ok()) else {
        return Response::error(
            400,
            "bad_request",
            "use /sleep?ms=<milliseconds>[&mode=busy]",
        );
    };
    let nanos = ms.saturating_mul(1_000_000);
    if req.query_param("mode") == Some("busy") {
        let start = monotonic_clock::now();
        while monotonic_clock::now().saturating_sub(start) < nanos {
            black_box(());
        }
    } else {
        monotonic_clock::subscribe_duration(nanos).block();
    }
    Response::text(200, format!("slept {ms} ms"))
}
