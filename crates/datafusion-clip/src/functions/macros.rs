//! `scoring_udf!`: the struct and `ScalarUDFImpl` of a scoring function,
//! generated from its [`Scoring`](super::scoring::Scoring) constant.

/// Defines a scoring function's struct and its `ScalarUDFImpl`, delegating
/// to a [`Scoring`] constant: the four scoring functions differ only there.
macro_rules! scoring_udf {
    ($(#[$doc:meta])* $name:ident, $scoring:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name {
            signature: datafusion::logical_expr::Signature,
            planning: $crate::planning::PlanningContext,
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl $name {
            /// A new instance; `register_all` gives it the session's config.
            pub fn new() -> Self {
                Self {
                    signature: datafusion::logical_expr::Signature::user_defined(
                        datafusion::logical_expr::Volatility::Stable,
                    ),
                    planning: $crate::planning::PlanningContext::default(),
                }
            }
        }

        impl datafusion::logical_expr::ScalarUDFImpl for $name {
            fn name(&self) -> &str {
                $scoring.name
            }

            fn signature(&self) -> &datafusion::logical_expr::Signature {
                &self.signature
            }

            fn coerce_types(
                &self,
                arg_types: &[datafusion::arrow::datatypes::DataType],
            ) -> datafusion::common::Result<Vec<datafusion::arrow::datatypes::DataType>> {
                $scoring.coerce_types(&self.planning, arg_types)
            }

            fn return_type(
                &self,
                _arg_types: &[datafusion::arrow::datatypes::DataType],
            ) -> datafusion::common::Result<datafusion::arrow::datatypes::DataType> {
                Ok($scoring.return_type())
            }

            fn return_field_from_args(
                &self,
                args: datafusion::logical_expr::ReturnFieldArgs,
            ) -> datafusion::common::Result<datafusion::arrow::datatypes::FieldRef> {
                $scoring.return_field(&self.planning, args)
            }

            fn with_updated_config(
                &self,
                config: &datafusion::config::ConfigOptions,
            ) -> Option<datafusion::logical_expr::ScalarUDF> {
                Some(datafusion::logical_expr::ScalarUDF::new_from_impl(Self {
                    planning: $crate::planning::PlanningContext::from_config(config),
                    ..self.clone()
                }))
            }

            fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
                static DOC: std::sync::OnceLock<datafusion::logical_expr::Documentation> =
                    std::sync::OnceLock::new();
                Some($scoring.doc.get(&DOC))
            }

            fn invoke_with_args(
                &self,
                args: datafusion::logical_expr::ScalarFunctionArgs,
            ) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
                $scoring.invoke(&self.planning, args)
            }
        }
    };
}

pub(crate) use scoring_udf;
