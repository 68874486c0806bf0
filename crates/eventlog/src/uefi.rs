//! UEFI structures found inside event data: GUIDs, UTF-16 strings, device paths,
//! `UEFI_VARIABLE_DATA`, `UEFI_IMAGE_LOAD_EVENT`, `EFI_LOAD_OPTION` and firmware blob ranges.
//!
//! Every reader is bounded by the event data it is given; a structure that does not fit is
//! `None` (the event is then shown as raw data), never a panic.

use crate::cursor::Cursor;

/// Most device path nodes decoded before the text is cut short.
const MAX_PATH_NODES: usize = 64;

/// A GUID as UEFI stores it (first three fields little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// `EFI_GLOBAL_VARIABLE`: SecureBoot, PK, KEK, BootOrder, Boot####.
    pub const GLOBAL_VARIABLE: Guid = Guid::from_fields(
        0x8be4df61,
        0x93ca,
        0x11d2,
        [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
    );
    /// `EFI_IMAGE_SECURITY_DATABASE_GUID`: db, dbx, dbt, dbr.
    pub const IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
        0xd719b2cb,
        0x3d3a,
        0x4596,
        [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
    );
    /// shim's variables: MokList, MokListX, MokSBState, SbatLevel.
    pub const SHIM_LOCK: Guid = Guid::from_fields(
        0x605dab50,
        0xe046,
        0x4300,
        [0xab, 0xb6, 0x3d, 0xd8, 0x10, 0xdd, 0x8b, 0x23],
    );

    /// From the textual fields.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [a0, a1, a2, a3, b0, b1, c0, c1, d0, d1, e @ ..] = self.0;
        let d1_ = u32::from_le_bytes([a0, a1, a2, a3]);
        let d2 = u16::from_le_bytes([b0, b1]);
        let d3 = u16::from_le_bytes([c0, c1]);
        write!(
            f,
            "{d1_:08x}-{d2:04x}-{d3:04x}-{d0:02x}{d1:02x}-{}",
            hex::encode(e)
        )
    }
}

/// Decodes UTF-16LE up to the first NUL (unpaired surrogates become U+FFFD).
pub fn utf16(bytes: &[u8]) -> String {
    let units = bytes
        .chunks_exact(2)
        .map(|c| {
            u16::from_le_bytes([
                c.first().copied().unwrap_or(0),
                c.get(1).copied().unwrap_or(0),
            ])
        })
        .take_while(|u| *u != 0);
    char::decode_utf16(units)
        .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Decodes text that is either UTF-16LE (every second byte zero) or ASCII/UTF-8, stopping at NUL.
pub fn text(bytes: &[u8]) -> String {
    let looks_utf16 = bytes.len() >= 4
        && bytes.len().is_multiple_of(2)
        && bytes.get(1) == Some(&0)
        && bytes.get(3) == Some(&0);
    if looks_utf16 {
        return utf16(bytes);
    }
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(bytes.get(..end).unwrap_or_default()).into_owned()
}

/// Whether `bytes` is printable text (ASCII, optionally NUL-terminated).
pub fn is_ascii_text(bytes: &[u8]) -> bool {
    let body = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    !body.is_empty()
        && body
            .iter()
            .all(|b| (0x20..0x7f).contains(b) || *b == b'\t' || *b == b'\n')
}

/// `UEFI_VARIABLE_DATA`: a measured UEFI variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableData<'a> {
    /// `VariableName` (the vendor GUID).
    pub guid: Guid,
    /// `UnicodeName`, decoded.
    pub name: String,
    /// `VariableData`.
    pub data: &'a [u8],
}

impl<'a> VariableData<'a> {
    /// Parses the structure; `None` when lengths do not fit the event data.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        let guid = Guid(c.array::<16>("VariableName").ok()?);
        let name_chars = c.u64("UnicodeNameLength").ok()?;
        let data_len = c.u64("VariableDataLength").ok()?;
        let name_bytes = usize::try_from(name_chars).ok()?.checked_mul(2)?;
        let name = c.take(name_bytes, "UnicodeName").ok()?;
        let data = c
            .take(usize::try_from(data_len).ok()?, "VariableData")
            .ok()?;
        Some(Self {
            guid,
            name: utf16(name),
            data,
        })
    }
}

/// `UEFI_IMAGE_LOAD_EVENT`: a PE image loaded by the firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLoad<'a> {
    /// `ImageLocationInMemory`.
    pub location: u64,
    /// `ImageLengthInMemory`.
    pub length: u64,
    /// `ImageLinkTimeAddress`.
    pub link_time_address: u64,
    /// `DevicePath` bytes.
    pub device_path: &'a [u8],
}

impl<'a> ImageLoad<'a> {
    /// Parses the structure; `None` when it does not fit.
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        let location = c.u64("ImageLocationInMemory").ok()?;
        let length = c.u64("ImageLengthInMemory").ok()?;
        let link_time_address = c.u64("ImageLinkTimeAddress").ok()?;
        let path_len = c.u64("LengthOfDevicePath").ok()?;
        let device_path = c.take(usize::try_from(path_len).ok()?, "DevicePath").ok()?;
        Some(Self {
            location,
            length,
            link_time_address,
            device_path,
        })
    }
}

/// `UEFI_PLATFORM_FIRMWARE_BLOB` (and the description of `..._BLOB2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareBlob {
    /// Description (`BLOB2` only).
    pub description: Option<String>,
    /// `BlobBase`.
    pub base: u64,
    /// `BlobLength`.
    pub length: u64,
}

impl FirmwareBlob {
    /// `UEFI_PLATFORM_FIRMWARE_BLOB`.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        Some(Self {
            description: None,
            base: c.u64("BlobBase").ok()?,
            length: c.u64("BlobLength").ok()?,
        })
    }

    /// `UEFI_PLATFORM_FIRMWARE_BLOB2`: a length-prefixed description, then base and length.
    pub fn parse2(bytes: &[u8]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        let n = c.u8("BlobDescriptionSize").ok()?;
        let d = c.take(usize::from(n), "BlobDescription").ok()?;
        Some(Self {
            description: Some(text(d)),
            base: c.u64("BlobBase").ok()?,
            length: c.u64("BlobLength").ok()?,
        })
    }
}

/// `EFI_LOAD_OPTION` (the data of a `Boot####` variable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    /// `Attributes`.
    pub attributes: u32,
    /// `Description`.
    pub description: String,
    /// The device path, as text.
    pub path: String,
}

impl LoadOption {
    /// Parses the structure; `None` when it does not fit.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let mut c = Cursor::new(bytes);
        let attributes = c.u32("Attributes").ok()?;
        let path_len = c.u16("FilePathListLength").ok()?;
        let rest = c.rest();
        // The description is NUL-terminated UTF-16.
        let mut end = None;
        let mut i = 0;
        while i + 1 < rest.len() {
            if rest.get(i) == Some(&0) && rest.get(i + 1) == Some(&0) {
                end = Some(i);
                break;
            }
            i += 2;
        }
        let end = end?;
        let description = utf16(rest.get(..end)?);
        let path_bytes = rest.get(end + 2..)?.get(..usize::from(path_len))?;
        Some(Self {
            attributes,
            description,
            path: device_path_text(path_bytes),
        })
    }
}

/// Renders a device path as UEFI's text form (`PciRoot(0x0)/Pci(0x1,0x1)/.../\EFI\BOOT\BOOTX64.EFI`).
///
/// Common nodes are named; others appear as `Path(type,subtype,hex)`. Malformed paths end with
/// `/<malformed>`.
pub fn device_path_text(bytes: &[u8]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if parts.len() >= MAX_PATH_NODES {
            parts.push("...".to_string());
            break;
        }
        let Some(node) = Node::split(&mut rest) else {
            parts.push("<malformed>".to_string());
            break;
        };
        if node.kind == 0x7f {
            if node.sub == 0xff {
                break;
            }
            // End of one instance: UEFI separates instances with a comma.
            parts.push(",".to_string());
            continue;
        }
        parts.push(node.text());
    }
    let mut out = String::new();
    for p in parts {
        if p == "," {
            out.push(',');
        } else {
            if !out.is_empty() && !out.ends_with(',') {
                out.push('/');
            }
            out.push_str(&p);
        }
    }
    out
}

/// The file path nodes of a device path, joined (`\EFI\ubuntu\grubx64.efi`), if any.
pub fn device_path_file(bytes: &[u8]) -> Option<String> {
    let mut rest = bytes;
    let mut file = String::new();
    let mut n = 0;
    while !rest.is_empty() && n < MAX_PATH_NODES {
        n += 1;
        let node = Node::split(&mut rest)?;
        if node.kind == 0x7f {
            break;
        }
        if node.kind == 4 && node.sub == 4 {
            let part = utf16(node.body);
            if !file.is_empty() && !file.ends_with('\\') && !part.starts_with('\\') {
                file.push('\\');
            }
            file.push_str(&part);
        }
    }
    (!file.is_empty()).then_some(file)
}

struct Node<'a> {
    kind: u8,
    sub: u8,
    body: &'a [u8],
}

impl<'a> Node<'a> {
    fn split(rest: &mut &'a [u8]) -> Option<Self> {
        let kind = *rest.first()?;
        let sub = *rest.get(1)?;
        let len = usize::from(u16::from_le_bytes([*rest.get(2)?, *rest.get(3)?]));
        if len < 4 {
            return None;
        }
        let (node, tail) = rest.split_at_checked(len)?;
        *rest = tail;
        Some(Self {
            kind,
            sub,
            body: node.get(4..)?,
        })
    }

    fn text(&self) -> String {
        let b = self.body;
        let mut c = Cursor::new(b);
        let named = match (self.kind, self.sub) {
            (1, 1) => {
                let func = c.u8("function").ok();
                let dev = c.u8("device").ok();
                dev.zip(func).map(|(d, f)| format!("Pci({d:#x},{f:#x})"))
            }
            (2, 1) => {
                let hid = c.u32("HID").ok();
                let uid = c.u32("UID").ok();
                hid.zip(uid).map(|(h, u)| match h {
                    0x0a03_41d0 => format!("PciRoot({u:#x})"),
                    0x0a08_41d0 => format!("PcieRoot({u:#x})"),
                    _ => format!("Acpi({h:#x},{u:#x})"),
                })
            }
            (3, 2) => {
                let t = c.u16("target").ok();
                let l = c.u16("lun").ok();
                t.zip(l).map(|(t, l)| format!("Scsi({t:#x},{l:#x})"))
            }
            (3, 5) => {
                let p = c.u8("port").ok();
                let i = c.u8("interface").ok();
                p.zip(i).map(|(p, i)| format!("USB({p:#x},{i:#x})"))
            }
            (3, 0x12) => {
                let h = c.u16("hba").ok();
                let p = c.u16("port").ok();
                let l = c.u16("lun").ok();
                match (h, p, l) {
                    (Some(h), Some(p), Some(l)) => Some(format!("Sata({h:#x},{p:#x},{l:#x})")),
                    _ => None,
                }
            }
            (3, 0x17) => c.u32("nsid").ok().map(|n| format!("NVMe({n:#x})")),
            (3, 0x0b) => Some(format!(
                "MAC({})",
                hex::encode(b.get(..6).unwrap_or_default())
            )),
            (3, 0x0c) => Some("IPv4()".to_string()),
            (3, 0x0d) => Some("IPv6()".to_string()),
            (3, 0x18) => Some(format!("Uri({})", String::from_utf8_lossy(b))),
            (4, 1) => {
                let part = c.u32("partition").ok();
                let start = c.u64("start").ok();
                let size = c.u64("size").ok();
                let sig = c.array::<16>("signature").ok();
                let format = c.u8("format").ok();
                let sig_type = c.u8("signatureType").ok();
                match (part, start, size, sig, format, sig_type) {
                    (Some(p), Some(st), Some(sz), Some(sig), Some(2), Some(2)) => {
                        Some(format!("HD({p},GPT,{},{st:#x},{sz:#x})", Guid(sig)))
                    }
                    (Some(p), Some(st), Some(sz), Some(sig), Some(1), Some(1)) => {
                        let [s0, s1, s2, s3, ..] = sig;
                        let mbr = u32::from_le_bytes([s0, s1, s2, s3]);
                        Some(format!("HD({p},MBR,{mbr:#010x},{st:#x},{sz:#x})"))
                    }
                    (Some(p), Some(st), Some(sz), _, _, _) => {
                        Some(format!("HD({p},{st:#x},{sz:#x})"))
                    }
                    _ => None,
                }
            }
            (4, 2) => c.u32("entry").ok().map(|e| format!("CDROM({e:#x})")),
            (4, 3) => c
                .array::<16>("guid")
                .ok()
                .map(|g| format!("VenMedia({})", Guid(g))),
            (4, 4) => Some(utf16(b)),
            (4, 6) => c
                .array::<16>("guid")
                .ok()
                .map(|g| format!("FvFile({})", Guid(g))),
            (4, 7) => c
                .array::<16>("guid")
                .ok()
                .map(|g| format!("Fv({})", Guid(g))),
            (4, 8) => {
                let _reserved = c.u32("reserved").ok();
                let s = c.u64("start").ok();
                let e = c.u64("end").ok();
                s.zip(e).map(|(s, e)| format!("Offset({s:#x},{e:#x})"))
            }
            (1, 4) | (3, 10) => c
                .array::<16>("guid")
                .ok()
                .map(|g| format!("Ven({})", Guid(g))),
            (5, 1) => Some("BBS()".to_string()),
            _ => None,
        };
        named.unwrap_or_else(|| format!("Path({},{},{})", self.kind, self.sub, hex::encode(b)))
    }
}
