//! The `partial`, `email` and `hash` column masks as native functions: one pass over each
//! string, where the same masks written as SQL (`regexp_replace`, `concat`, `left`, `right`,
//! `encode(sha256(…), 'hex')`) took several passes, a regular expression or an intermediate
//! binary array per row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, StringBuilder, StringViewBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, plan_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// Which text mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TextMask {
    /// Letters and digits become `*`, except the first `keep_start` and last `keep_end`
    /// characters; a value no longer than both together is masked whole.
    Partial { keep_start: usize, keep_end: usize },
    /// `a***@x.com`: the first character, `***`, then from the `@` on; `****` when there is
    /// no `@` after the first character.
    Email,
    /// The SHA-256 of the value's UTF-8 bytes in lowercase hex, as PostgreSQL's
    /// `encode(sha256(value::bytea), 'hex')`: equal values stay joinable, the value is hidden.
    Hash,
}

impl TextMask {
    /// The function applying this mask, for a scan's projection.
    pub(crate) fn udf(self) -> ScalarUDF {
        ScalarUDF::new_from_impl(MaskFn {
            mask: self,
            signature: Signature::uniform(
                1,
                vec![DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8],
                Volatility::Immutable,
            ),
        })
    }

    fn apply(self, value: &str, out: &mut String) {
        out.clear();
        match self {
            TextMask::Partial {
                keep_start,
                keep_end,
            } if value.is_ascii() => {
                // Bytes are characters: no decoding, no counting.
                let n = value.len();
                let whole = n <= keep_start.saturating_add(keep_end);
                out.extend(value.bytes().enumerate().map(|(i, b)| {
                    let kept = !whole && (i < keep_start || i >= n - keep_end);
                    char::from(if !kept && b.is_ascii_alphanumeric() {
                        b'*'
                    } else {
                        b
                    })
                }));
            }
            TextMask::Partial {
                keep_start,
                keep_end,
            } => {
                let n = value.chars().count();
                let whole = n <= keep_start.saturating_add(keep_end);
                for (i, ch) in value.chars().enumerate() {
                    let kept = !whole && (i < keep_start || i >= n - keep_end);
                    out.push(if !kept && ch.is_ascii_alphanumeric() {
                        '*'
                    } else {
                        ch
                    });
                }
            }
            TextMask::Email => match value.find('@') {
                Some(at) if at > 0 => {
                    let first = value.chars().next().unwrap_or_default();
                    out.push(first);
                    out.push_str("***");
                    out.push_str(&value[at..]);
                }
                _ => out.push_str("****"),
            },
            TextMask::Hash => {
                use sha2::Digest;
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut hex = [0u8; 64];
                for (pair, byte) in hex
                    .chunks_exact_mut(2)
                    .zip(sha2::Sha256::digest(value.as_bytes()))
                {
                    pair[0] = HEX[usize::from(byte >> 4)];
                    pair[1] = HEX[usize::from(byte & 0x0f)];
                }
                out.push_str(std::str::from_utf8(&hex).unwrap_or_default());
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct MaskFn {
    mask: TextMask,
    signature: Signature,
}

impl ScalarUDFImpl for MaskFn {
    fn name(&self) -> &str {
        match self.mask {
            TextMask::Partial { .. } => "strata_mask_partial",
            TextMask::Email => "strata_mask_email",
            TextMask::Hash => "strata_mask_hash",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args.first() {
            // Masked values keep the layout of the column (no cast back after masking).
            Some(DataType::Utf8View) => Ok(DataType::Utf8View),
            Some(DataType::Utf8 | DataType::LargeUtf8 | DataType::Null) => Ok(DataType::Utf8),
            other => plan_err!("{}: expected text, got {other:?}", self.name()),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let input = &arrays[0];
        let per_value = if self.mask == TextMask::Hash { 64 } else { 16 };
        let mut buf = String::new();
        if let DataType::Utf8View = input.data_type() {
            let mut out = StringViewBuilder::with_capacity(input.len());
            for v in input.as_string_view().iter() {
                match v {
                    Some(v) => {
                        self.mask.apply(v, &mut buf);
                        out.append_value(&buf);
                    }
                    None => out.append_null(),
                }
            }
            return Ok(ColumnarValue::Array(Arc::new(out.finish())));
        }
        let mut out = StringBuilder::with_capacity(input.len(), input.len() * per_value);
        let mut push = |v: Option<&str>| match v {
            Some(v) => {
                self.mask.apply(v, &mut buf);
                out.append_value(&buf);
            }
            None => out.append_null(),
        };
        match input.data_type() {
            DataType::LargeUtf8 => input.as_string::<i64>().iter().for_each(&mut push),
            DataType::Utf8 => input.as_string::<i32>().iter().for_each(&mut push),
            _ => (0..input.len()).for_each(|_| push(None)),
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(mask: TextMask, v: &str) -> String {
        let mut out = String::new();
        mask.apply(v, &mut out);
        out
    }

    #[test]
    fn partial_keeps_the_ends_and_stars_letters_and_digits() {
        let cpf = TextMask::Partial {
            keep_start: 0,
            keep_end: 2,
        };
        assert_eq!(masked(cpf, "123.456.789-12"), "***.***.***-12");
        let clerk = TextMask::Partial {
            keep_start: 0,
            keep_end: 3,
        };
        assert_eq!(masked(clerk, "Clerk#000000951"), "*****#******951");
        let both = TextMask::Partial {
            keep_start: 2,
            keep_end: 2,
        };
        assert_eq!(masked(both, "abcdef"), "ab**ef");
        // No longer than what would be kept: masked whole.
        assert_eq!(masked(both, "abcd"), "****");
        assert_eq!(masked(both, ""), "");
        // Characters, not bytes.
        assert_eq!(masked(both, "ÁbçdéF"), "Ábç*éF");
        assert_eq!(masked(both, "ñandú-42"), "ña**ú-42");
    }

    #[test]
    fn email_keeps_the_first_character_and_the_domain() {
        assert_eq!(
            masked(TextMask::Email, "alice@example.com"),
            "a***@example.com"
        );
        assert_eq!(masked(TextMask::Email, "élodie@x.fr"), "é***@x.fr");
        assert_eq!(masked(TextMask::Email, "@x.com"), "****");
        assert_eq!(masked(TextMask::Email, "no-at-sign"), "****");
        assert_eq!(masked(TextMask::Email, ""), "****");
    }

    #[test]
    fn masked_columns_keep_their_string_layout() {
        use datafusion::arrow::array::{ArrayRef, StringViewArray};
        use datafusion::arrow::datatypes::Field;
        let input: ArrayRef = Arc::new(StringViewArray::from(vec![
            Some("Clerk#000000951"),
            None,
            Some("ñandú-42"),
        ]));
        let udf = TextMask::Partial {
            keep_start: 0,
            keep_end: 3,
        }
        .udf();
        assert_eq!(
            udf.return_type(&[DataType::Utf8View]).unwrap(),
            DataType::Utf8View
        );
        let out = udf
            .invoke_with_args(ScalarFunctionArgs {
                args: vec![ColumnarValue::Array(input)],
                arg_fields: vec![Arc::new(Field::new("c", DataType::Utf8View, true))],
                number_rows: 3,
                return_field: Arc::new(Field::new("c", DataType::Utf8View, true)),
                config_options: Arc::default(),
            })
            .unwrap()
            .into_array(3)
            .unwrap();
        let out = out.as_string_view();
        assert_eq!(out.value(0), "*****#******951");
        assert!(out.is_null(1));
        assert_eq!(out.value(2), "ñ***ú-42");
    }

    #[test]
    fn hash_is_the_hex_sha256_postgres_gives() {
        // SELECT encode(sha256('alice@example.com'::bytea), 'hex') on PostgreSQL 15.
        assert_eq!(
            masked(TextMask::Hash, "alice@example.com"),
            "ff8d9819fc0e12bf0d24892e45987e249a28dce836a85cad60e28eaaa8c6d976"
        );
        assert_eq!(
            masked(TextMask::Hash, ""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
