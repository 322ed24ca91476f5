with

source as (
    select * from {{ source('public_data', 'bank_contacts') }}
),

renamed as (
    select
        cast(source_row as bigint) as contact_id,
        cast(contact_date as date) as contact_date,
        cast(age as integer) as age,
        job,
        marital,
        education,
        "default" as credit_default,
        cast(balance as integer) as balance,
        housing,
        loan,
        contact,
        cast(day as integer) as contact_day,
        month as contact_month,
        -- call length in seconds: known only after the call, so it leaks the target
        cast(duration as integer) as duration,
        cast(campaign as integer) as campaign,
        cast(pdays as integer) as pdays,
        cast(previous as integer) as previous,
        poutcome,
        cast(case y when 'yes' then 1 when 'no' then 0 end as integer) as subscribed
    from source
)

select * from renamed
