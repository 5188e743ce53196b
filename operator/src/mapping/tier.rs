//! Pure: whether a GPU model, as a node's product label names it, is a consumer card.

/// Whether a model name is a consumer card (GeForce, TITAN, the GeForce RTX 20–50 series
/// however the label spells it), as opposed to data-center and workstation parts (A100,
/// H100, L40S, RTX A6000, RTX 4000 Ada, Quadro RTX 5000 …).
///
/// Workstation cards share the `RTX-<digits>` prefix with GeForce ones (`NVIDIA-RTX-4000-
/// Ada-Generation`, `Quadro-RTX-5000`, `NVIDIA-RTX-2000-Ada-Generation`): only the
/// numbering tells them apart. GeForce numbers are `<generation 2–5>0<tier 5–9>0`
/// (2080, 3060, 4090, 5090, with `Ti`/`SUPER` after), workstation ones are round
/// thousands (2000, 4000, 5000, 6000, 8000) or start with a letter (A6000).
pub fn is_consumer(model: &str) -> bool {
    let m = model.to_ascii_uppercase();
    m.contains("GEFORCE") || m.contains("TITAN") || consumer_rtx_number(&m)
}

/// Whether upper-cased `m` names an RTX card by a GeForce number: `RTX`, an optional
/// separator, then exactly the four digits `[2-5]0[5-9]0` (a fifth digit or a letter
/// glued to them makes another name).
fn consumer_rtx_number(m: &str) -> bool {
    m.match_indices("RTX").any(|(at, _)| {
        let rest = m.as_bytes().get(at + 3..).unwrap_or_default();
        let rest = match rest {
            [b'-' | b'_' | b' ', tail @ ..] => tail,
            _ => rest,
        };
        matches!(rest, [b'2'..=b'5', b'0', b'5'..=b'9', b'0', tail @ ..]
            if !tail.first().is_some_and(u8::is_ascii_alphanumeric))
    })
}

#[cfg(test)]
mod tests {
    use super::is_consumer;

    #[test]
    fn geforce_and_titan_cards_are_consumer() {
        for m in [
            "NVIDIA-GeForce-RTX-4090",
            "NVIDIA-GeForce-RTX-3060-Ti",
            "NVIDIA-GeForce-RTX-4080-SUPER",
            "NVIDIA-GeForce-GTX-1080",
            "NVIDIA-TITAN-RTX",
            "NVIDIA-TITAN-V",
            // Without the GeForce word, as some labels spell them.
            "NVIDIA-RTX-4090",
            "RTX-3090",
            "RTX-2080-Ti",
            "RTX 5090",
            "rtx_3050",
            "NVIDIA-RTX4070",
        ] {
            assert!(is_consumer(m), "{m}");
        }
    }

    #[test]
    fn workstation_and_data_center_cards_are_not() {
        for m in [
            "NVIDIA-RTX-4000-Ada-Generation",
            "NVIDIA-RTX-2000-Ada-Generation",
            "NVIDIA-RTX-5000-Ada-Generation",
            "NVIDIA-RTX-6000-Ada-Generation",
            "Quadro-RTX-5000",
            "Quadro-RTX-8000",
            "Quadro-RTX-4000",
            "NVIDIA-RTX-A6000",
            "NVIDIA-RTX-A4000",
            "NVIDIA-RTX-PRO-6000-Blackwell",
            "NVIDIA-H100-80GB-HBM3",
            "NVIDIA-A100-SXM4-80GB",
            "NVIDIA-L40S",
            // Not a GeForce number: five digits, or a letter glued on.
            "RTX-40900",
            "RTX-4090X",
            "RTX",
        ] {
            assert!(!is_consumer(m), "{m}");
        }
    }
}
