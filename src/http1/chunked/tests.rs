use super::*;

/// Feeds `input` to a chunked decoder in pieces of `step` bytes, as reads would deliver it:
/// the body, and what is left in the buffer after it.
fn decode_in_steps(input: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), CodecError> {
    let mut decoder = Chunked::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut pieces = input.chunks(step);
    loop {
        match decoder.decode(&mut buf)? {
            Decoded::Data(data) => body.extend_from_slice(&data),
            Decoded::Done => return Ok((body, buf.to_vec())),
            Decoded::NeedMore => match pieces.next() {
                Some(piece) => buf.extend_from_slice(piece),
                None => return Err(CodecError::Truncated),
            },
        }
    }
}

const BODY: &[u8] = b"4\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\n\r\n";

#[test]
fn decodes_a_chunked_body_whole() {
    let (body, rest) = decode_in_steps(BODY, BODY.len()).unwrap();
    assert_eq!(body, b"Wikipedia in \r\n\r\nchunks.");
    assert!(rest.is_empty());
}

#[test]
fn decodes_a_chunked_body_split_across_every_read_boundary() {
    for step in 1..BODY.len() {
        let (body, rest) = decode_in_steps(BODY, step).unwrap();
        assert_eq!(body, b"Wikipedia in \r\n\r\nchunks.", "step {step}");
        assert!(rest.is_empty());
    }
}

#[test]
fn ignores_extensions_and_skips_trailers() {
    let input = b"5;name=value ; other\r\nhello\r\nA \t;x\r\n0123456789\r\n0;last\r\nx-checksum: 1\r\nx-more: 2\r\n\r\nNEXT";
    for step in [1, 3, input.len()] {
        let (body, rest) = decode_in_steps(input, step).unwrap();
        assert_eq!(body, b"hello0123456789");
        // What follows the body stays in the buffer (it would make the connection unusable).
        assert!(b"NEXT".starts_with(&rest), "{rest:?}");
    }
}

#[test]
fn accepts_bare_line_feeds() {
    let (body, _) = decode_in_steps(b"3\nabc\n0\n\n", 100).unwrap();
    assert_eq!(body, b"abc");
}

#[test]
fn large_sizes_in_hex_are_read_exactly() {
    let data = vec![b'z'; 0x1_0000];
    let mut input = b"10000\r\n".to_vec();
    input.extend_from_slice(&data);
    input.extend_from_slice(b"\r\n0\r\n\r\n");
    let (body, _) = decode_in_steps(&input, 4096).unwrap();
    assert_eq!(body, data);
}

#[test]
fn refuses_malformed_chunks() {
    for bad in [
        &b"x\r\nabc\r\n0\r\n\r\n"[..],
        b"\r\n",
        b"3 4\r\nabc\r\n0\r\n\r\n",
        b"3\r\nabcd\r\n0\r\n\r\n",
        b"11111111111111111\r\n",
        b"-3\r\nabc\r\n",
    ] {
        assert_eq!(
            decode_in_steps(bad, 2).unwrap_err(),
            CodecError::Chunked,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn refuses_endless_size_and_trailer_lines() {
    let endless = vec![b'1'; MAX_LINE + 2];
    assert_eq!(
        decode_in_steps(&endless, 512).unwrap_err(),
        CodecError::Chunked
    );
    let mut trailer = b"0\r\nx: ".to_vec();
    trailer.extend(std::iter::repeat_n(b'a', MAX_LINE + 2));
    assert_eq!(
        decode_in_steps(&trailer, 512).unwrap_err(),
        CodecError::Chunked
    );
}

#[test]
fn a_length_body_takes_exactly_its_bytes() {
    let mut decoder = Decoder::Length(5);
    let mut buf = BytesMut::from(&b"abc"[..]);
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from_static(b"abc"))
    );
    assert_eq!(decoder.remaining(), Some(2));
    assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::NeedMore);
    buf.extend_from_slice(b"deXTRA");
    assert_eq!(
        decoder.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from_static(b"de"))
    );
    assert!(decoder.is_done());
    assert_eq!(decoder.decode(&mut buf).unwrap(), Decoded::Done);
    assert_eq!(&buf[..], b"XTRA");
}

#[test]
fn the_end_of_the_connection_ends_only_an_eof_body() {
    let mut eof = Decoder::Eof(false);
    let mut buf = BytesMut::from(&b"all"[..]);
    assert_eq!(
        eof.decode(&mut buf).unwrap(),
        Decoded::Data(Bytes::from_static(b"all"))
    );
    assert_eq!(eof.decode(&mut buf).unwrap(), Decoded::NeedMore);
    assert!(eof.at_eof().is_ok());
    assert_eq!(eof.decode(&mut buf).unwrap(), Decoded::Done);

    assert_eq!(
        Decoder::Length(3).at_eof().unwrap_err(),
        CodecError::Truncated
    );
    assert_eq!(
        Decoder::Chunked(Chunked::default()).at_eof().unwrap_err(),
        CodecError::Truncated
    );
}
