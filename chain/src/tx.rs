//! Legacy transactions, encoded by our own code from the wire format's facts:
//!
//! ```text
//! transaction = shortvec(signatures) ‖ 64-byte signatures ‖ message
//! message     = header[3] ‖ shortvec(keys) ‖ 32-byte keys ‖ blockhash[32] ‖ shortvec(instructions)
//! header      = [required signatures, read-only signed, read-only unsigned]
//! instruction = program index u8 ‖ shortvec(account indices u8) ‖ shortvec(data)
//! ```
//! Keys are ordered writable signers (fee payer first), read-only signers, writable
//! non-signers, read-only non-signers. Every signer signs the message bytes; the first
//! signature is the transaction id.

use base64::Engine;

use crate::error::ChainError;
use crate::pubkey::{Keypair, Pubkey};

/// Largest serialized transaction a validator accepts (IPv6 MTU minus headers).
pub const PACKET_DATA_SIZE: usize = 1232;

/// One account an instruction touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountMeta {
    /// The account.
    pub key: Pubkey,
    /// Must sign the transaction.
    pub signer: bool,
    /// Is written.
    pub writable: bool,
}

impl AccountMeta {
    /// Writable, not a signer.
    pub fn writable(key: Pubkey) -> Self {
        Self {
            key,
            signer: false,
            writable: true,
        }
    }
    /// Read-only, not a signer.
    pub fn readonly(key: Pubkey) -> Self {
        Self {
            key,
            signer: false,
            writable: false,
        }
    }
    /// Read-only signer.
    pub fn signer(key: Pubkey) -> Self {
        Self {
            key,
            signer: true,
            writable: false,
        }
    }
    /// Writable signer.
    pub fn writable_signer(key: Pubkey) -> Self {
        Self {
            key,
            signer: true,
            writable: true,
        }
    }
}

/// One instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// Program to run.
    pub program: Pubkey,
    /// Accounts in the program's order.
    pub accounts: Vec<AccountMeta>,
    /// Instruction data.
    pub data: Vec<u8>,
}

/// Appends Solana's compact-u16 ("shortvec") length encoding.
pub fn put_shortvec(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let mut byte = (v & 0x7f) as u8;
        v >>= 7;
        if v != 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if v == 0 {
            break;
        }
    }
}

/// A compiled, unsigned message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Ordered keys.
    pub keys: Vec<Pubkey>,
    /// Number of signers (the first keys).
    pub required_signatures: u8,
    /// Serialized bytes (what is signed).
    pub bytes: Vec<u8>,
}

impl Message {
    /// Compiles instructions with `payer` as fee payer.
    pub fn compile(
        payer: Pubkey,
        instructions: &[Instruction],
        blockhash: [u8; 32],
    ) -> Result<Self, ChainError> {
        // (key, signer, writable) in first-seen order, payer first.
        let mut metas: Vec<AccountMeta> = vec![AccountMeta::writable_signer(payer)];
        let mut add = |m: AccountMeta| match metas.iter_mut().find(|x| x.key == m.key) {
            Some(x) => {
                x.signer |= m.signer;
                x.writable |= m.writable;
            }
            None => metas.push(m),
        };
        for ix in instructions {
            for a in &ix.accounts {
                add(*a);
            }
            add(AccountMeta::readonly(ix.program));
        }
        let class = |m: &AccountMeta| match (m.signer, m.writable) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        // Stable sort keeps the payer first among writable signers.
        metas.sort_by_key(class);
        if metas.len() > 256 {
            return Err(ChainError::TooLarge(format!(
                "{} accounts (at most 256)",
                metas.len()
            )));
        }
        let count = |c| metas.iter().filter(|m| class(m) == c).count() as u8;
        let required = count(0) + count(1);
        let keys: Vec<Pubkey> = metas.iter().map(|m| m.key).collect();
        let index = |k: &Pubkey| keys.iter().position(|x| x == k).unwrap_or(0) as u8;

        let mut b = vec![required, count(1), count(3)];
        put_shortvec(&mut b, keys.len());
        for k in &keys {
            b.extend_from_slice(&k.0);
        }
        b.extend_from_slice(&blockhash);
        put_shortvec(&mut b, instructions.len());
        for ix in instructions {
            b.push(index(&ix.program));
            put_shortvec(&mut b, ix.accounts.len());
            b.extend(ix.accounts.iter().map(|a| index(&a.key)));
            put_shortvec(&mut b, ix.data.len());
            b.extend_from_slice(&ix.data);
        }
        Ok(Self {
            keys,
            required_signatures: required,
            bytes: b,
        })
    }
}

/// A signed transaction ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// Base58 of the first signature: the transaction id.
    pub signature: String,
    /// Wire bytes.
    pub wire: Vec<u8>,
}

impl SignedTx {
    /// The wire bytes in base64 (what `sendTransaction` takes and the journal persists).
    pub fn base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.wire)
    }
}

/// Compiles and signs. Every required signer must be among `signers`; the first signer is
/// the fee payer. Refuses transactions over [`PACKET_DATA_SIZE`].
pub fn sign(
    instructions: &[Instruction],
    signers: &[&Keypair],
    blockhash: [u8; 32],
) -> Result<SignedTx, ChainError> {
    let payer = signers
        .first()
        .ok_or_else(|| ChainError::MissingSigner("no fee payer".into()))?;
    let msg = Message::compile(payer.pubkey(), instructions, blockhash)?;
    let mut wire = Vec::with_capacity(PACKET_DATA_SIZE);
    put_shortvec(&mut wire, msg.required_signatures as usize);
    let mut first = None;
    for key in &msg.keys[..msg.required_signatures as usize] {
        let kp = signers
            .iter()
            .find(|s| s.pubkey() == *key)
            .ok_or_else(|| ChainError::MissingSigner(key.to_string()))?;
        let sig = kp.sign(&msg.bytes);
        first.get_or_insert(sig);
        wire.extend_from_slice(&sig);
    }
    wire.extend_from_slice(&msg.bytes);
    if wire.len() > PACKET_DATA_SIZE {
        return Err(ChainError::TooLarge(format!(
            "{} bytes (at most {PACKET_DATA_SIZE})",
            wire.len()
        )));
    }
    let signature = bs58::encode(first.unwrap_or([0; 64])).into_string();
    Ok(SignedTx { signature, wire })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};

    #[test]
    fn shortvec_matches_the_spec_examples() {
        for (v, want) in [
            (0usize, vec![0x00]),
            (0x7f, vec![0x7f]),
            (0x80, vec![0x80, 0x01]),
            (0x3fff, vec![0xff, 0x7f]),
            (0x4000, vec![0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            put_shortvec(&mut out, v);
            assert_eq!(out, want, "{v:#x}");
        }
    }

    #[test]
    fn keys_are_ordered_and_signature_verifies() {
        let payer = Keypair::generate();
        let other = Keypair::generate();
        let program = Pubkey([9; 32]);
        let w = Pubkey([1; 32]);
        let r = Pubkey([2; 32]);
        let ix = Instruction {
            program,
            accounts: vec![
                AccountMeta::readonly(r),
                AccountMeta::writable(w),
                AccountMeta::signer(other.pubkey()),
            ],
            data: vec![1, 2, 3],
        };
        let tx = sign(&[ix], &[&payer, &other], [7; 32]).unwrap();
        let msg = Message::compile(payer.pubkey(), &[tx_ix(program, r, w, &other)], [7; 32]).unwrap();
        assert_eq!(msg.keys, vec![payer.pubkey(), other.pubkey(), w, r, program]);
        assert_eq!(&msg.bytes[..3], &[2, 1, 2]);
        // Wire: 2 signatures then the message.
        assert_eq!(tx.wire[0], 2);
        assert_eq!(&tx.wire[129..], &msg.bytes[..]);
        let sig = Signature::from_bytes(tx.wire[1..65].try_into().unwrap());
        VerifyingKey::from_bytes(&payer.pubkey().0)
            .unwrap()
            .verify(&msg.bytes, &sig)
            .unwrap();
        assert_eq!(tx.signature, bs58::encode(&tx.wire[1..65]).into_string());
    }

    fn tx_ix(program: Pubkey, r: Pubkey, w: Pubkey, other: &Keypair) -> Instruction {
        Instruction {
            program,
            accounts: vec![
                AccountMeta::readonly(r),
                AccountMeta::writable(w),
                AccountMeta::signer(other.pubkey()),
            ],
            data: vec![1, 2, 3],
        }
    }

    #[test]
    fn missing_signer_and_oversize_are_refused() {
        let payer = Keypair::generate();
        let other = Keypair::generate();
        let program = Pubkey([9; 32]);
        let ix = tx_ix(program, Pubkey([2; 32]), Pubkey([1; 32]), &other);
        assert!(matches!(
            sign(&[ix], &[&payer], [0; 32]),
            Err(ChainError::MissingSigner(_))
        ));
        let big = Instruction {
            program,
            accounts: vec![],
            data: vec![0; 1200],
        };
        assert!(matches!(
            sign(&[big], &[&payer], [0; 32]),
            Err(ChainError::TooLarge(_))
        ));
    }
}
