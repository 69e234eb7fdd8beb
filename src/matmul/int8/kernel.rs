//! Which kernel sums an int8 product's tiles: a choice the product and the quantised rows of A
//! ([`super::QuantA`], whose layout depends on it) share.

/// Which kernel sums the tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Plain loops, on any CPU.
    Portable,
    /// AVX512-VNNI (VPDPBUSD).
    Vnni,
    /// AMX tiles (TDPBUSD, [`crate::matmul::amx`]).
    Amx,
}

impl Kernel {
    /// The fastest kernel this CPU runs ([`crate::cpu::amx`], [`crate::cpu::vnni`]).
    pub fn best() -> Kernel {
        if crate::cpu::amx() {
            Kernel::Amx
        } else if crate::cpu::vnni() {
            Kernel::Vnni
        } else {
            Kernel::Portable
        }
    }
}
