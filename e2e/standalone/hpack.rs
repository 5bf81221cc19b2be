//! How the proxy's HTTP/2 responses encode their headers with HPACK (RFC 7541), read from
//! the raw frames of an h2c connection, because HTTP/2 client libraries hide the encoding.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::gangway::start_echo_app;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADERS: u8 = 0x1;
const FRAME_SETTINGS: u8 = 0x4;
const FLAG_ACK: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// How one header field of a block is represented (RFC 7541 section 6).
#[derive(Debug, PartialEq, Eq)]
enum Representation {
    Indexed,
    IncrementalIndexing,
    WithoutIndexing,
    NeverIndexed,
    TableSizeUpdate,
}

/// Reads an integer with a `prefix_bits`-bit prefix (RFC 7541 section 5.1) from
/// `block[*at..]`, and moves `at` past it.
fn read_integer(block: &[u8], at: &mut usize, prefix_bits: u32) -> usize {
    let max_prefix = (1usize << prefix_bits) - 1;
    let mut value = usize::from(block[*at]) & max_prefix;
    *at += 1;
    if value < max_prefix {
        return value;
    }
    let mut shift = 0;
    loop {
        let byte = block[*at];
        *at += 1;
        value += usize::from(byte & 0x7f) << shift;
        shift += 7;
        if byte & 0x80 == 0 {
            return value;
        }
    }
}

/// Moves `at` past a string literal, Huffman-coded or not (RFC 7541 section 5.2).
fn skip_string(block: &[u8], at: &mut usize) {
    let length = read_integer(block, at, 7);
    *at += length;
}

/// Returns the representation of every field in a header block, without decoding names or
/// values: the first bits of each field tell the representation and the lengths to skip.
fn representations(block: &[u8]) -> Vec<Representation> {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let first = block[at];
        let (representation, prefix_bits) = if first & 0x80 != 0 {
            (Representation::Indexed, 7)
        } else if first & 0xc0 == 0x40 {
            (Representation::IncrementalIndexing, 6)
        } else if first & 0xe0 == 0x20 {
            (Representation::TableSizeUpdate, 5)
        } else if first & 0xf0 == 0x10 {
            (Representation::NeverIndexed, 4)
        } else {
            (Representation::WithoutIndexing, 4)
        };
        let name_index = read_integer(block, &mut at, prefix_bits);
        let literal = !matches!(
            representation,
            Representation::Indexed | Representation::TableSizeUpdate
        );
        if literal {
            if name_index == 0 {
                skip_string(block, &mut at);
            }
            skip_string(block, &mut at);
        }
        fields.push(representation);
    }
    fields
}

/// Encodes one frame: its 9-byte header (RFC 9113 section 4.1), then `payload`.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut bytes = vec![length[1], length[2], length[3], kind, flags];
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// Returns the header block of a GET for `/` on `host`: `:method GET`, `:scheme http` and
/// `:path /` from the static table, and `:authority` as a literal without indexing.
fn get_block(host: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, u8::try_from(host.len()).unwrap()];
    block.extend_from_slice(host.as_bytes());
    block
}

/// Sends `count` GET requests on one h2c connection, one stream after the other, and
/// returns the header block of each response.
async fn response_blocks(stream: &mut TcpStream, host: &str, count: u32) -> Vec<Vec<u8>> {
    stream.write_all(PREFACE).await.unwrap();
    stream
        .write_all(&frame(FRAME_SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    let mut blocks = Vec::new();
    for index in 0..count {
        let stream_id = 1 + 2 * index;
        let request = frame(
            FRAME_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            stream_id,
            &get_block(host),
        );
        stream.write_all(&request).await.unwrap();
        loop {
            let mut head = [0u8; 9];
            stream.read_exact(&mut head).await.unwrap();
            let length =
                usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let frame_stream =
                u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; length];
            stream.read_exact(&mut payload).await.unwrap();
            if kind == FRAME_SETTINGS && flags & FLAG_ACK == 0 {
                stream
                    .write_all(&frame(FRAME_SETTINGS, FLAG_ACK, 0, &[]))
                    .await
                    .unwrap();
            }
            if kind == FRAME_HEADERS && frame_stream == stream_id {
                // The payload is the whole header block only without padding or priority
                // fields, and without CONTINUATION frames after it.
                assert_eq!(flags & FLAG_PADDED, 0, "padded HEADERS frame");
                assert_eq!(flags & FLAG_PRIORITY, 0, "HEADERS frame with priority");
                assert_eq!(
                    flags & FLAG_END_HEADERS,
                    FLAG_END_HEADERS,
                    "CONTINUATION follows"
                );
                blocks.push(payload);
                break;
            }
        }
    }
    blocks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_never_indexed_over_http2() {
    let (gangway, _server) = start_echo_app("app.test", &[]).await;
    let mut stream = TcpStream::connect(gangway.http).await.unwrap();

    let blocks = tokio::time::timeout(
        Duration::from_secs(10),
        response_blocks(&mut stream, "app.test", 20),
    )
    .await
    .expect("20 responses within 10 s");

    // Each response carries a new X-Request-ID, the only field the proxy marks sensitive.
    // Indexed, each id would take a place in the dynamic table and push out entries that
    // later responses could reuse.
    for (index, block) in blocks.iter().enumerate() {
        let fields = representations(block);
        let never_indexed = fields
            .iter()
            .filter(|field| **field == Representation::NeverIndexed)
            .count();
        assert_eq!(never_indexed, 1, "response {index}: {fields:?}");
    }
    // The other fields repeat, so the last response finds them in the table. Only `date`
    // enters it again, when the second has changed since the previous response.
    let last = representations(blocks.last().unwrap());
    let added = last
        .iter()
        .filter(|field| **field == Representation::IncrementalIndexing)
        .count();
    assert!(
        added <= 1,
        "the last response adds {added} fields: {last:?}"
    );
}
