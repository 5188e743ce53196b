//! Public keys, program-derived addresses and keypairs.
//!
//! A Solana address is 32 bytes written in base58. A program-derived address (PDA) is
//! `SHA-256(seeds ‖ bump ‖ program ‖ "ProgramDerivedAddress")` for the largest bump whose
//! hash is *not* a point on the ed25519 curve (so no private key can exist for it).

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};

use crate::error::ChainError;

/// A 32-byte Solana address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pubkey(pub [u8; 32]);

impl Pubkey {
    /// Parses a base58 address; the error names what was wrong.
    pub fn parse(s: &str) -> Result<Self, ChainError> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|e| ChainError::InvalidKey(format!("{s:?} is not base58: {e}")))?;
        let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            ChainError::InvalidKey(format!("{s:?} decodes to {} bytes, not 32", b.len()))
        })?;
        Ok(Self(arr))
    }

    /// Compile-time-known constants (program ids); panics only on a typo in our source.
    pub(crate) fn from_static(s: &'static str) -> Self {
        #[allow(clippy::expect_used)]
        Self::parse(s).expect("static program id is valid base58")
    }

    /// Whether these bytes are a valid ed25519 point (a PDA must not be).
    pub fn is_on_curve(&self) -> bool {
        CompressedEdwardsY(self.0).decompress().is_some()
    }

    /// `find_program_address`: the PDA and its bump seed.
    pub fn find_program_address(seeds: &[&[u8]], program: &Pubkey) -> Option<(Pubkey, u8)> {
        (0..=255u8).rev().find_map(|bump| {
            let mut h = Sha256::new();
            for s in seeds {
                h.update(s);
            }
            h.update([bump]);
            h.update(program.0);
            h.update(b"ProgramDerivedAddress");
            let key = Pubkey(h.finalize().into());
            (!key.is_on_curve()).then_some((key, bump))
        })
    }
}

impl fmt::Display for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.0).into_string())
    }
}

impl fmt::Debug for Pubkey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pubkey({self})")
    }
}

impl FromStr for Pubkey {
    type Err = ChainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An ed25519 keypair. Its secret never appears in `Debug` output or logs.
pub struct Keypair(SigningKey);

impl Keypair {
    /// A fresh random keypair.
    pub fn generate() -> Self {
        let seed: [u8; 32] = rand::random();
        Self(SigningKey::from_bytes(&seed))
    }

    /// From the 64 bytes of Solana's keypair format (secret ‖ public); the public half
    /// must match the secret.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChainError> {
        let arr: &[u8; 64] = bytes
            .try_into()
            .map_err(|_| ChainError::InvalidKey(format!("a keypair is 64 bytes, got {}", bytes.len())))?;
        let key = SigningKey::from_keypair_bytes(arr)
            .map_err(|_| ChainError::InvalidKey("keypair's public half does not match its secret".into()))?;
        Ok(Self(key))
    }

    /// Parses the JSON array format written by `solana-keygen` (`[12,34,…]`, 64 numbers).
    pub fn from_json(text: &str) -> Result<Self, ChainError> {
        let bytes: Vec<u8> = serde_json::from_str(text.trim())
            .map_err(|e| ChainError::InvalidKey(format!("keypair JSON is not an array of 64 bytes: {e}")))?;
        Self::from_bytes(&bytes)
    }

    /// Reads a keypair file (mounted read-only from a Secret in the Helm chart).
    pub fn read(path: &Path) -> Result<Self, ChainError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ChainError::InvalidKey(format!("cannot read keypair {}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    /// The keypair in `solana-keygen`'s JSON format.
    pub fn to_json(&self) -> String {
        let bytes = self.0.to_keypair_bytes();
        serde_json::to_string(&bytes.to_vec()).unwrap_or_default()
    }

    /// The public key.
    pub fn pubkey(&self) -> Pubkey {
        Pubkey(self.0.verifying_key().to_bytes())
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({}, secret redacted)", self.pubkey())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn base58_round_trip_and_errors_name_the_problem() {
        let k = Pubkey::parse("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA").unwrap();
        assert_eq!(k.to_string(), "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA");
        assert_eq!(
            Pubkey::parse("11111111111111111111111111111111").unwrap(),
            Pubkey([0; 32])
        );
        let e = Pubkey::parse("0OIl").unwrap_err().to_string();
        assert!(e.contains("not base58"), "{e}");
        let e = Pubkey::parse("abc").unwrap_err().to_string();
        assert!(e.contains("not 32"), "{e}");
    }

    #[test]
    fn pda_is_off_curve_and_deterministic() {
        let program = Pubkey::parse("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL").unwrap();
        let wallet = Keypair::generate().pubkey();
        let (a, bump) = Pubkey::find_program_address(&[&wallet.0, b"x"], &program).unwrap();
        let (b, bump2) = Pubkey::find_program_address(&[&wallet.0, b"x"], &program).unwrap();
        assert_eq!((a, bump), (b, bump2));
        assert!(!a.is_on_curve());
        // A real public key is on the curve.
        assert!(wallet.is_on_curve());
    }

    #[test]
    fn keypair_json_round_trip_and_mismatch_refused() {
        let k = Keypair::generate();
        let back = Keypair::from_json(&k.to_json()).unwrap();
        assert_eq!(back.pubkey(), k.pubkey());
        let mut bytes: Vec<u8> = serde_json::from_str(&k.to_json()).unwrap();
        bytes[40] ^= 1;
        assert!(Keypair::from_bytes(&bytes).is_err());
        assert!(
            Keypair::from_json("[1,2,3]")
                .unwrap_err()
                .to_string()
                .contains("64 bytes")
        );
        assert!(!format!("{k:?}").contains(&k.to_json()));
    }
}
