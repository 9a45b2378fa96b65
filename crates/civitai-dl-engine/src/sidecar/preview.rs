//! Preview images: named `<stem>.preview.<ext>` with the extension of what the bytes are, not of
//! the URL. Civitai's image CDN answers a `.jpeg` URL with WebP or PNG as it sees fit, and the
//! readers pick a preview by extension: a WebP saved as `.jpeg` shows as broken in SwarmUI, which
//! cannot read WebP at all.
//!
//! The `.preview.` infix is always there: A1111 takes any other `.png` or `.webp` in its
//! `embeddings/` folder for an embedding hidden in an image, and every reader (A1111, Forge,
//! Civitai Helper, LoRA Manager, SwarmUI) looks for `<stem>.preview.<ext>`.

use std::path::{Path, PathBuf};

use crate::plan::naming::Layout;
use crate::plan::preview_path;

/// What a preview's first bytes say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// PNG.
    Png,
    /// JPEG.
    Jpeg,
    /// WebP.
    Webp,
    /// GIF.
    Gif,
    /// AVIF (an ISO-BMFF still image).
    Avif,
    /// MP4 (or another ISO-BMFF video).
    Mp4,
    /// WebM (Matroska).
    Webm,
}

/// The bytes [`sniff`] needs.
pub const SNIFF_BYTES: usize = 16;

impl MediaType {
    /// The extension written after `.preview.`.
    pub fn extension(self) -> &'static str {
        match self {
            MediaType::Png => "png",
            MediaType::Jpeg => "jpeg",
            MediaType::Webp => "webp",
            MediaType::Gif => "gif",
            MediaType::Avif => "avif",
            MediaType::Mp4 => "mp4",
            MediaType::Webm => "webm",
        }
    }

    /// Whether the app this layout serves can show it as a preview. SwarmUI reads only PNG and
    /// JPEG previews (`.png`, `.jpg`, `.jpeg`, with or without `.preview.`).
    pub fn shown_by(self, layout: Layout) -> bool {
        !layout.is_swarm() || matches!(self, MediaType::Png | MediaType::Jpeg)
    }
}

/// Every extension a preview may be saved with.
pub const EXTENSIONS: [&str; 7] = ["png", "jpeg", "webp", "gif", "avif", "mp4", "webm"];

/// The preview in `slot` beside `model_file` an earlier run (of `download` or `scan`) saved,
/// whatever its format; an empty file is none.
pub fn existing(model_file: &Path, slot: usize) -> Option<PathBuf> {
    EXTENSIONS
        .iter()
        .map(|ext| preview_path(model_file, slot, ext))
        .find(|path| std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() > 0))
}

/// The first bytes of a file, enough for [`sniff`].
pub fn read_head(path: &Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    std::fs::File::open(path)
        .ok()?
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some(head)
}

/// The media type of a file from its first bytes, `None` when it is none of the known ones.
pub fn sniff(head: &[u8]) -> Option<MediaType> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if at(0, b"\x89PNG\r\n\x1a\n") {
        Some(MediaType::Png)
    } else if at(0, &[0xFF, 0xD8, 0xFF]) {
        Some(MediaType::Jpeg)
    } else if at(0, b"RIFF") && at(8, b"WEBP") {
        Some(MediaType::Webp)
    } else if at(0, b"GIF87a") || at(0, b"GIF89a") {
        Some(MediaType::Gif)
    } else if at(4, b"ftyp") {
        if at(8, b"avif") || at(8, b"avis") {
            Some(MediaType::Avif)
        } else {
            Some(MediaType::Mp4)
        }
    } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(MediaType::Webm)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniff_table() {
        let cases: [(&[u8], Option<MediaType>); 11] = [
            (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", Some(MediaType::Png)),
            (
                &[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F'],
                Some(MediaType::Jpeg),
            ),
            (&[0xFF, 0xD8, 0xFF, 0xDB], Some(MediaType::Jpeg)),
            (b"RIFF\x24\0\0\0WEBPVP8 ", Some(MediaType::Webp)),
            (b"RIFF\x24\0\0\0WAVEfmt ", None),
            (b"GIF89a\x01\0", Some(MediaType::Gif)),
            (b"\0\0\0\x20ftypisom\0\0\x02\0", Some(MediaType::Mp4)),
            (b"\0\0\0\x1cftypavif\0\0\0\0", Some(MediaType::Avif)),
            (&[0x1A, 0x45, 0xDF, 0xA3, 0x9F], Some(MediaType::Webm)),
            (b"<!DOCTYPE html>", None),
            (b"", None),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(head), expected, "{head:?}");
        }
    }

    #[test]
    fn swarm_shows_only_png_and_jpeg() {
        for media in [
            MediaType::Png,
            MediaType::Jpeg,
            MediaType::Webp,
            MediaType::Gif,
            MediaType::Avif,
            MediaType::Mp4,
            MediaType::Webm,
        ] {
            let png_or_jpeg = matches!(media, MediaType::Png | MediaType::Jpeg);
            assert_eq!(media.shown_by(Layout::Swarm), png_or_jpeg, "{media:?}");
            assert!(media.shown_by(Layout::A1111) && media.shown_by(Layout::Flat));
            assert!(EXTENSIONS.contains(&media.extension()));
        }
    }
}
