//! Kernel struct member offsets from BTF (/sys/kernel/btf/vmlinux).

use btf_rs::{Btf, Type};
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
        for name in path.split('.') {
            let (member_bits, member_ty) = self.find_member(&ty, name, 0).ok_or_else(no_member)?;
            bits += member_bits;
            ty = member_ty;
        }
        Ok(bits / 8)
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

    /// Finds `name` in struct/union `ty`, descending into anonymous members.
    fn find_member(&self, ty: &Type, name: &str, depth: u32) -> Option<(u32, Type)> {
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
                return Some((member.bit_offset(), member_ty));
            }
            if member_name.is_empty()
                && let Some((bits, found)) = self.find_member(&member_ty, name, depth + 1)
            {
                return Some((member.bit_offset() + bits, found));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs only a readable /sys/kernel/btf/vmlinux, not root.
    #[test]
    fn resolves_nested_members_through_anonymous_unions() {
        let Ok(btf) = KernelBtf::load() else {
            eprintln!("SKIPPED: no kernel BTF at {VMLINUX_BTF}");
            assert!(
                std::env::var_os("CI").is_none(),
                "CI machines have kernel BTF"
            );
            return;
        };
        // skc_family sits inside anonymous structs/unions of sock_common on every kernel.
        let family = btf.offset_of("sock", "__sk_common.skc_family").unwrap();
        assert!(family > 0 && family < 64, "skc_family at {family}");
        assert!(btf.offset_of("sock", "__sk_common.skc_net.net").is_ok());
        assert!(btf.offset_of("net", "ns.inum").is_ok());
        assert!(btf.offset_of("sock", "no_such_member").is_err());
        let states = btf.enum_values("sk_rst_reason").unwrap_or_default();
        if !states.is_empty() {
            assert!(states.contains(&(1, "SK_RST_REASON_NO_SOCKET".to_owned())));
        }
    }
}
