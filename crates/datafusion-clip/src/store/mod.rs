//! Where image bytes come from: the object stores (local, S3) and the AWS
//! profile files that configure S3.

mod aws_profile;
pub mod object_stores;
