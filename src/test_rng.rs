//! A small xorshift generator for the randomised unit tests: each test repeats exactly from its
//! seed, with no dependency.

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough below `n` (n > 0) for choosing among test inputs.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub(crate) fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// `input` with one to four random edits: a flipped bit, a byte replaced by one of
    /// `special`, a run of `special` bytes inserted, a range deleted or repeated, a CR or LF
    /// inserted. For checking that parsers of outside input survive whatever arrives.
    pub(crate) fn mutate(&mut self, input: &[u8], special: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(out.len() + 1);
            match self.below(6) {
                0 if at < out.len() => out[at] ^= 1 << self.below(8),
                1 if at < out.len() => out[at] = special[self.below(special.len())],
                2 => {
                    let run: Vec<u8> = (0..1 + self.below(6))
                        .map(|_| special[self.below(special.len())])
                        .collect();
                    out.splice(at..at, run);
                }
                3 if at < out.len() => {
                    let end = (at + 1 + self.below(12)).min(out.len());
                    out.drain(at..end);
                }
                4 if at < out.len() => {
                    let end = (at + 1 + self.below(40)).min(out.len());
                    let piece = out[at..end].to_vec();
                    out.splice(at..at, piece);
                }
                _ => out.insert(at, b"\r\n"[self.below(2)]),
            }
        }
        out
    }
}
