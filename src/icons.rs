//! The tray's state art: the icons drawn once as SVG (`icons/conntrack-tray-<state>.svg`),
//! rendered to PNG by `icons/render.sh` and installed into the hicolor theme, and two of those
//! PNG sizes built in here, so the tray shows exactly the installed art whether or not it is
//! installed. 22 px is what most panels ask for; 48 px serves the panels that scale (24 px
//! panels halve it, HiDPI ones take it whole) better than blowing up 22.
//!
//! They are decoded with the pure-Rust `png` crate (no C, no system library), once, when the
//! tray starts; `tray` hands them to the StatusNotifierItem.

use crate::tray::IconState;

/// The sizes built in, in pixels (square).
pub const SIZES: [u32; 2] = [22, 48];

/// A decoded icon: `width × height` pixels, four bytes each, red, green, blue, alpha
/// (straight, not premultiplied), row by row from the top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgba {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// A built-in icon that does not decode: a broken build, never outside input.
#[derive(Debug, thiserror::Error)]
#[error("the {name} icon does not decode: {source}")]
pub struct ArtError {
    name: String,
    source: DecodeError,
}

/// Why a PNG did not decode.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{0}")]
    Png(#[from] png::DecodingError),
    #[error("its pixels are of a kind the tray cannot show ({0:?})")]
    Kind(png::ColorType),
}

/// The art's name for a state (`icons/conntrack-tray-<name>.svg`): a stopped helper shows
/// the error icon.
pub fn name(state: IconState) -> &'static str {
    match state {
        IconState::Monitoring => "monitoring",
        IconState::Alert => "alert",
        IconState::Paused => "paused",
        IconState::Stopped => "error",
    }
}

macro_rules! art {
    ($name:literal) => {
        [
            include_bytes!(concat!(
                "../icons/hicolor/22x22/status/conntrack-tray-",
                $name,
                ".png"
            ))
            .as_slice(),
            include_bytes!(concat!(
                "../icons/hicolor/48x48/status/conntrack-tray-",
                $name,
                ".png"
            ))
            .as_slice(),
        ]
    };
}

/// The PNG files of a state's icon, one per size of [`SIZES`].
fn png_files(state: IconState) -> [&'static [u8]; 2] {
    match state {
        IconState::Monitoring => art!("monitoring"),
        IconState::Alert => art!("alert"),
        IconState::Paused => art!("paused"),
        IconState::Stopped => art!("error"),
    }
}

/// A state's icon at every built-in size, smallest first.
pub fn icon(state: IconState) -> Result<Vec<Rgba>, ArtError> {
    png_files(state)
        .iter()
        .zip(SIZES)
        .map(|(file, size)| {
            decode(file).map_err(|source| ArtError {
                name: format!("{} ({size} px)", name(state)),
                source,
            })
        })
        .collect()
}

/// Decodes a PNG into 8-bit RGBA, whatever its own layout: palette and low bit depths are
/// expanded, 16-bit samples cut to 8, grey spread to the three colours, and a missing alpha
/// made opaque (or taken from the file's transparent colour).
pub fn decode(file: &[u8]) -> Result<Rgba, DecodeError> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(file));
    decoder.set_transformations(
        png::Transformations::EXPAND | png::Transformations::STRIP_16 | png::Transformations::ALPHA,
    );
    let mut reader = decoder.read_info()?;
    let size = reader
        .output_buffer_size()
        .ok_or(png::DecodingError::LimitsExceeded)?;
    let mut buf = vec![0; size];
    let frame = reader.next_frame(&mut buf)?;
    buf.truncate(frame.buffer_size());
    let data = match frame.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::GrayscaleAlpha => buf
            .chunks_exact(2)
            .flat_map(|ga| [ga[0], ga[0], ga[0], ga[1]])
            .collect(),
        kind => return Err(DecodeError::Kind(kind)),
    };
    Ok(Rgba {
        width: frame.width,
        height: frame.height,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATES: [IconState; 4] = [
        IconState::Monitoring,
        IconState::Alert,
        IconState::Paused,
        IconState::Stopped,
    ];

    fn alpha(icon: &Rgba, x: u32, y: u32) -> u8 {
        icon.data[((y * icon.width + x) * 4 + 3) as usize]
    }

    #[test]
    fn every_state_has_its_art_at_both_sizes_with_transparent_corners() {
        for state in STATES {
            let sizes = icon(state).expect("built-in art decodes");
            assert_eq!(sizes.len(), SIZES.len());
            for (icon, size) in sizes.iter().zip(SIZES) {
                assert_eq!((icon.width, icon.height), (size, size), "{state:?}");
                assert_eq!(icon.data.len(), (size * size * 4) as usize);
                let last = size - 1;
                for (x, y) in [(0, 0), (last, 0), (0, last), (last, last)] {
                    assert_eq!(alpha(icon, x, y), 0, "{state:?} {size} px corner");
                }
                assert_eq!(alpha(icon, size / 2, size / 2), 0xff, "{state:?} centre");
            }
        }
    }

    #[test]
    fn icons_differ_by_state() {
        let all: Vec<Vec<Rgba>> = STATES.iter().map(|s| icon(*s).expect("art")).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a[0], b[0]);
                assert_ne!(a[1], b[1]);
            }
        }
    }

    #[test]
    fn grey_and_palette_pngs_come_out_as_rgba() {
        // A 2×1 grey+alpha image and a 1×1 palette image with a transparent colour, written
        // by the same crate.
        let encode = |w, h, color, data: &[u8], palette: Option<(&[u8], &[u8])>| {
            let mut out = Vec::new();
            let mut e = png::Encoder::new(&mut out, w, h);
            e.set_color(color);
            e.set_depth(png::BitDepth::Eight);
            if let Some((plte, trns)) = palette {
                e.set_palette(plte.to_vec());
                e.set_trns(trns.to_vec());
            }
            e.write_header()
                .and_then(|mut w| w.write_image_data(data))
                .expect("encode");
            out
        };
        let ga = encode(
            2,
            1,
            png::ColorType::GrayscaleAlpha,
            &[10, 255, 200, 0],
            None,
        );
        assert_eq!(
            decode(&ga).expect("decode").data,
            [10, 10, 10, 255, 200, 200, 200, 0]
        );
        let pal = encode(
            1,
            1,
            png::ColorType::Indexed,
            &[0],
            Some((&[1, 2, 3], &[128])),
        );
        assert_eq!(decode(&pal).expect("decode").data, [1, 2, 3, 128]);
        assert!(matches!(decode(b"not a png"), Err(DecodeError::Png(_))));
        assert!(matches!(
            decode(&ga[..ga.len() / 2]),
            Err(DecodeError::Png(_))
        ));
    }
}
