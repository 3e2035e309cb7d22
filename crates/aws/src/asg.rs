//! The Auto Scaling calls both the stack (status, destroy) and the deploy paths make: a group's
//! members, and deleting a group.

use crate::clients::Clients;
use crate::error::{api, AwsError};

pub(crate) const SERVICE: &str = "autoscaling";

/// Deletes a group and its instances; a group already gone is fine.
pub async fn delete_group(clients: &Clients, name: &str) -> Result<(), AwsError> {
    match clients
        .asg
        .delete_auto_scaling_group()
        .auto_scaling_group_name(name)
        .force_delete(true)
        .send()
        .await
        .map_err(api(SERVICE, "DeleteAutoScalingGroup"))
    {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("not found") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The instance IDs of a group that are in service or on their way.
pub(crate) async fn members(
    clients: &Clients,
    name: &str,
) -> Result<Vec<(String, String)>, AwsError> {
    let out = clients
        .asg
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .map_err(api(SERVICE, "DescribeAutoScalingGroups"))?;
    Ok(out
        .auto_scaling_groups()
        .iter()
        .flat_map(|g| g.instances())
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_owned(),
                i.lifecycle_state()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
            ))
        })
        .collect())
}

/// The instance IDs of a group.
pub async fn member_ids(clients: &Clients, name: &str) -> Result<Vec<String>, AwsError> {
    Ok(members(clients, name)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect())
}
