//! `hello`: the smallest Nimbus function, used by benchmarks. Owns two routes:
//! `/echo` answers 200 with the request body back (and its content type), every other path
//! answers 200 `text/plain` `hello from nimbus`.

use nimbus_guest::{Handler, Request, Response};

struct Hello;

impl Handler for Hello {
    fn handle(req: Request) -> Response {
        if req.path_only() == "/echo" {
            let content_type = req
                .header("content-type")
                .map(<[u8]>::to_vec)
                .unwrap_or_else(|| b"application/octet-stream".to_vec());
            return Response::new(200)
                .with_header("content-type", content_type)
                .with_body(req.body);
        }
        Response::text(200, "hello from nimbus")
    }
}

nimbus_guest::export_handler!(Hello);
