/** The SDK's version (kept equal to package.json's by a unit test). */
export const SDK_VERSION = "0.1.0";

/** The language this SDK registers as. */
export const SDK_LANGUAGE = "typescript";
