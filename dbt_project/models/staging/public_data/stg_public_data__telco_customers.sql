with

source as (
    select * from {{ source('public_data', 'telco_customers') }}
),

renamed as (
    select
        customer_id,
        gender,
        cast(senior_citizen as integer) as senior_citizen,
        partner,
        dependents,
        cast(tenure as integer) as tenure,
        phone_service,
        multiple_lines,
        internet_service,
        online_security,
        online_backup,
        device_protection,
        tech_support,
        streaming_tv,
        streaming_movies,
        contract,
        paperless_billing,
        payment_method,
        cast(monthly_charges as numeric(12, 2)) as monthly_charges,
        -- blank for customers with zero tenure: no charges billed yet
        cast(nullif(trim(total_charges), '') as numeric(12, 2)) as total_charges,
        cast(case churn when 'Yes' then 1 when 'No' then 0 end as integer) as churned
    from source
)

select * from renamed
