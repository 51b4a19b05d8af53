//! Kernel struct member offsets from BTF (/sys/kernel/btf/vmlinux).

use btf_rs::{Btf, Type};
use observer_common::probe_config::KernelBits;
use thiserror::Error;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, Error)]
pub enum BtfError {
    #[error(
        "cannot read kernel BTF at {VMLINUX_BTF} ({0}); the kernel needs CONFIG_DEBUG_INFO_BTF=y"
    )]
    Unavailable(String),
    #[error("kernel BTF has no member `{path}` in struct {strukt}")]
    NoMember { strukt: String, path: String },
    #[error("kernel BTF has no enum {0}")]
    NoEnum(String),
    #[error("member `{path}` of struct {strukt} is not an integer of at most 32 bits")]
    NotAnInteger { strukt: String, path: String },
}

/// A member found by [`KernelBtf::locate`].
struct Located {
    bits: u32,
    ty: Type,
    bitfield: Option<u32>,
}

/// Kernel BTF, parsed once.
pub struct KernelBtf(Btf);

impl KernelBtf {
    pub fn load() -> Result<Self, BtfError> {
        Btf::from_file(VMLINUX_BTF)
            .map(Self)
            .map_err(|e| BtfError::Unavailable(e.to_string()))
    }

    /// Byte offset of a (possibly nested) member, e.g. `("sock", "__sk_common.skc_net.net")`.
    /// Anonymous unions and structs along the way are searched as C would.
    pub fn offset_of(&self, strukt: &str, path: &str) -> Result<u32, BtfError> {
        self.locate(strukt, path).map(|found| found.bits / 8)
    }

    /// How to read an integer member (plain, or a bitfield as older kernels have for
    /// `sk_protocol`) as the `u32` that holds it.
    pub fn bits_of(&self, strukt: &str, path: &str) -> Result<KernelBits, BtfError> {
        let not_integer = || BtfError::NotAnInteger {
            strukt: strukt.to_owned(),
            path: path.to_owned(),
        };
        let found = self.locate(strukt, path)?;
        let width = match found.bitfield {
            Some(width) => width,
            None => match &found.ty {
                Type::Int(i) => u32::try_from(i.size() * 8).map_err(|_| not_integer())?,
                Type::Enum(e) => u32::try_from(e.size() * 8).map_err(|_| not_integer())?,
                _ => return Err(not_integer()),
            },
        };
        if width == 0 || width > 32 {
            return Err(not_integer());
        }
        let mask = u32::MAX >> (32 - width);
        if found.bitfield.is_none() && found.bits.is_multiple_of(8) {
            // A whole integer: read from its first byte.
            let shift = if cfg!(target_endian = "little") {
                0
            } else {
                32 - width
            };
            return Ok(KernelBits {
                offset: found.bits / 8,
                shift,
                mask,
            });
        }
        // BTF numbers bitfield bits from the least significant bit only on little-endian.
        let shift = found.bits % 32;
        if cfg!(target_endian = "big") || shift + width > 32 {
            return Err(not_integer());
        }
        Ok(KernelBits {
            offset: found.bits / 32 * 4,
            shift,
            mask,
        })
    }

    /// The member at `path` in `strukt`: its bit offset, type, and bitfield width.
    fn locate(&self, strukt: &str, path: &str) -> Result<Located, BtfError> {
        let no_member = || BtfError::NoMember {
            strukt: strukt.to_owned(),
            path: path.to_owned(),
        };
        let mut ty = self
            .0
            .resolve_types_by_name(strukt)
            .ok()
            .and_then(|types| types.into_iter().find(|t| matches!(t, Type::Struct(_))))
            .ok_or_else(no_member)?;
        let mut bits = 0;
        let mut bitfield = None;
        for name in path.split('.') {
            let (member_bits, member_ty, width) =
                self.find_member(&ty, name, 0).ok_or_else(no_member)?;
            bits += member_bits;
            ty = member_ty;
            bitfield = width;
        }
        Ok(Located { bits, ty, bitfield })
    }

    /// The values of enum `name` with their names, e.g. `sk_rst_reason`.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(u32, String)>, BtfError> {
        let found = self
            .0
            .resolve_types_by_name(name)
            .ok()
            .and_then(|types| {
                types.into_iter().find_map(|t| match t {
                    Type::Enum(e) => Some(e),
                    _ => None,
                })
            })
            .ok_or_else(|| BtfError::NoEnum(name.to_owned()))?;
        Ok(found
            .members
            .iter()
            .map(|m| (m.val(), self.0.resolve_name(m).unwrap_or_default()))
            .collect())
    }

    /// Finds `name` in struct/union `ty`, descending into anonymous members: its bit offset,
    /// type, and bitfield width if it is one.
    fn find_member(&self, ty: &Type, name: &str, depth: u32) -> Option<(u32, Type, Option<u32>)> {
        let members = match ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return None,
        };
        if depth > 8 {
            return None;
        }
        for member in members {
            let member_ty = self.skip_modifiers(self.0.resolve_chained_type(member).ok()?)?;
            let member_name = self.0.resolve_name(member).unwrap_or_default();
            if member_name == name {
                let width = member.bitfield_size().filter(|w| *w != 0);
                return Some((member.bit_offset(), member_ty, width));
            }
            if member_name.is_empty()
                && let Some((bits, found, width)) = self.find_member(&member_ty, name, depth + 1)
            {
                return Some((member.bit_offset() + bits, found, width));
            }
        }
        None
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn skip_modifiers(&self, mut ty: Type) -> Option<Type> {
        for _ in 0..16 {
            match &ty {
                Type::Typedef(_)
                | Type::Const(_)
                | Type::Volatile(_)
                | Type::Restrict(_)
                | Type::TypeTag(_) => {
                    let inner = ty.as_btf_type()?;
                    ty = self.0.resolve_chained_type(inner).ok()?;
                }
                _ => return Some(ty),
            }
        }
        None
    }
}

/// The running kernel's BTF for a unit test, which needs only a readable
/// /sys/kernel/btf/vmlinux, not root; `None` (the test skips, loudly) without it, which CI
/// does not accept.
#[cfg(test)]
pub(crate) fn btf_for_test() -> Option<KernelBtf> {
    let btf = KernelBtf::load().ok();
    if btf.is_none() {
        eprintln!("SKIPPED: no kernel BTF at {VMLINUX_BTF}");
        assert!(
            std::env::var_os("CI").is_none(),
            "CI machines have kernel BTF"
        );
    }
    btf
}

/// BTF written by hand, for layouts of kernels that cannot be booted here.
#[cfg(test)]
pub(crate) mod handmade {
    use super::{Btf, KernelBtf};

    const INT: u32 = 1;
    const PTR: u32 = 2;
    pub(crate) const STRUCT: u32 = 4;
    pub(crate) const UNION: u32 = 5;

    /// A member: name (`""` for an anonymous one), type id, bit offset, bitfield width (0:
    /// none).
    pub(crate) type Member<'a> = (&'a str, u32, u32, u32);

    /// Types in the order added; ids from 1.
    pub(crate) struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next: u32,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next: 1,
            }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let at = u32::try_from(self.strings.len()).unwrap();
            self.strings.extend(name.bytes().chain([0]));
            at
        }

        fn header(&mut self, name: &str, kind: u32, vlen: u32, kind_flag: bool, size: u32) -> u32 {
            let name = self.name(name);
            let info = (u32::from(kind_flag) << 31) | (kind << 24) | vlen;
            for word in [name, info, size] {
                self.types.extend(word.to_le_bytes());
            }
            self.next += 1;
            self.next - 1
        }

        pub(crate) fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let id = self.header(name, INT, 0, false, bytes);
            self.types.extend((bytes * 8).to_le_bytes());
            id
        }

        /// A pointer to type `to`, which may be added later.
        pub(crate) fn ptr(&mut self, to: u32) -> u32 {
            self.header("", PTR, 0, false, to)
        }

        pub(crate) fn composite(
            &mut self,
            kind: u32,
            name: &str,
            bytes: u32,
            members: &[Member<'_>],
        ) -> u32 {
            let bitfields = members.iter().any(|m| m.3 != 0);
            let vlen = u32::try_from(members.len()).unwrap();
            let id = self.header(name, kind, vlen, bitfields, bytes);
            for &(name, ty, bit_offset, width) in members {
                let name = self.name(name);
                let offset = if bitfields {
                    (width << 24) | bit_offset
                } else {
                    bit_offset
                };
                for word in [name, ty, offset] {
                    self.types.extend(word.to_le_bytes());
                }
            }
            id
        }

        /// The id the next type added gets.
        pub(crate) const fn next_id(&self) -> u32 {
            self.next
        }

        pub(crate) fn build(self) -> KernelBtf {
            let (types, strings) = (
                u32::try_from(self.types.len()).unwrap(),
                u32::try_from(self.strings.len()).unwrap(),
            );
            let mut bytes = Vec::new();
            bytes.extend(0xeb9f_u16.to_le_bytes());
            bytes.extend([1, 0]);
            for word in [24, 0, types, types, strings] {
                bytes.extend(u32::to_le_bytes(word));
            }
            bytes.extend(self.types);
            bytes.extend(self.strings);
            KernelBtf(Btf::from_bytes(&bytes).expect("hand-made BTF parses"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_nested_members_through_anonymous_unions() {
        let Some(btf) = btf_for_test() else {
            return;
        };
        // skc_family sits inside anonymous structs/unions of sock_common on every kernel.
        let family = btf.offset_of("sock", "__sk_common.skc_family").unwrap();
        assert!(family > 0 && family < 64, "skc_family at {family}");
        assert!(btf.offset_of("sock", "__sk_common.skc_net.net").is_ok());
        assert!(btf.offset_of("net", "ns.inum").is_ok());
        assert!(btf.offset_of("sock", "no_such_member").is_err());
        // sk_protocol is a u16 since Linux 5.6, a bitfield before: both are readable.
        let protocol = btf.bits_of("sock", "sk_protocol").unwrap();
        assert!(
            protocol.mask == 0xffff || protocol.mask == 0xff,
            "{protocol:?}"
        );
        assert_eq!(
            btf.bits_of("inet_connection_sock", "icsk_retransmits")
                .unwrap()
                .mask,
            0xff
        );
        assert!(btf.bits_of("sock", "__sk_common.skc_net").is_err());
        let states = btf.enum_values("sk_rst_reason").unwrap_or_default();
        if !states.is_empty() {
            assert!(states.contains(&(1, "SK_RST_REASON_NO_SOCKET".to_owned())));
        }
    }
}
