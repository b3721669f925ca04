package meshplane

// Version is this SDK's version; agents report it in `register.sdk.version`.
const Version = "0.1.0"

// sdkLanguage is what agents built with this SDK report in `register.sdk.language`.
const sdkLanguage = "go"
