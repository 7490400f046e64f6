//! What the fuzz targets share: how an input chooses its split points.
//!
//! An input is `knob, count, sizes[count], payload`: `knob` is the target's own choice (limits,
//! method, mode), `count` (mod 8) how many piece sizes follow, each 1 to 256 bytes; the payload is
//! fed in pieces of those sizes, cycled, as reads from a socket would hand it over. With no sizes
//! it comes whole.

/// A fuzz input taken apart.
#[derive(Debug)]
pub struct Input<'a> {
    pub knob: u8,
    pub sizes: Vec<usize>,
    pub payload: &'a [u8],
}

impl<'a> Input<'a> {
    /// `None` when the input is too short to hold its own prefix.
    pub fn new(data: &'a [u8]) -> Option<Input<'a>> {
        let (&knob, rest) = data.split_first()?;
        let (&count, rest) = rest.split_first()?;
        let count = usize::from(count % 8);
        if rest.len() < count {
            return None;
        }
        let (sizes, payload) = rest.split_at(count);
        Some(Input {
            knob,
            sizes: sizes.iter().map(|&b| usize::from(b) + 1).collect(),
            payload,
        })
    }

    /// The payload in pieces.
    pub fn pieces(&self) -> Pieces<'_> {
        Pieces {
            sizes: &self.sizes,
            next: 0,
            rest: self.payload,
        }
    }
}

/// The payload's pieces, in order.
pub struct Pieces<'a> {
    sizes: &'a [usize],
    next: usize,
    rest: &'a [u8],
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let size = match self.sizes.get(self.next % self.sizes.len().max(1)) {
            Some(&size) => size.min(self.rest.len()),
            None => self.rest.len(),
        };
        self.next += 1;
        let (piece, rest) = self.rest.split_at(size);
        self.rest = rest;
        Some(piece)
    }
}

/// Builds an input from its parts (seed corpora, tests).
pub fn encode(knob: u8, sizes: &[u8], payload: &[u8]) -> Vec<u8> {
    assert!(sizes.len() < 8);
    let mut out = vec![knob, sizes.len() as u8];
    out.extend_from_slice(sizes);
    out.extend_from_slice(payload);
    out
}
