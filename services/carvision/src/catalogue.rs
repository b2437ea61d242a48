//! The cars the synthetic data lists: each model with its body type, price when new, share
//! of four-wheel drive and cylinders, roughly as in the public file's most listed models.

/// One car model the generator lists.
pub struct Car {
    /// Brand then model, as the `model` column writes it.
    pub model: &'static str,
    pub body: &'static str,
    /// US dollars.
    pub new_price: f64,
    /// The share of listings with four-wheel drive.
    pub four_wd: f64,
    pub cylinders: f64,
}

const fn car(
    model: &'static str,
    body: &'static str,
    new_price: f64,
    four_wd: f64,
    cylinders: f64,
) -> Car {
    Car {
        model,
        body,
        new_price,
        four_wd,
        cylinders,
    }
}

pub const CARS: &[Car] = &[
    car("ford f-150", "truck", 40_000.0, 0.65, 8.0),
    car("ford f-250 sd", "truck", 52_000.0, 0.75, 8.0),
    car("ford focus", "sedan", 19_000.0, 0.0, 4.0),
    car("ford escape", "SUV", 26_000.0, 0.4, 4.0),
    car("ford explorer", "SUV", 34_000.0, 0.5, 6.0),
    car("ford mustang", "coupe", 30_000.0, 0.0, 8.0),
    car("ford transit connect", "van", 27_000.0, 0.0, 4.0),
    car("chevrolet silverado 1500", "truck", 41_000.0, 0.65, 8.0),
    car("chevrolet malibu", "sedan", 23_000.0, 0.0, 4.0),
    car("chevrolet equinox", "SUV", 26_000.0, 0.3, 4.0),
    car("chevrolet tahoe", "SUV", 52_000.0, 0.6, 8.0),
    car("chevrolet camaro", "coupe", 30_000.0, 0.0, 8.0),
    car("toyota camry", "sedan", 25_000.0, 0.0, 4.0),
    car("toyota corolla", "sedan", 20_000.0, 0.0, 4.0),
    car("toyota tacoma", "pickup", 32_000.0, 0.6, 6.0),
    car("toyota rav4", "SUV", 27_000.0, 0.4, 4.0),
    car("toyota prius", "hatchback", 25_000.0, 0.0, 4.0),
    car("honda accord", "sedan", 25_000.0, 0.0, 4.0),
    car("honda civic", "sedan", 21_000.0, 0.0, 4.0),
    car("honda cr-v", "SUV", 27_000.0, 0.4, 4.0),
    car("honda odyssey", "mini-van", 32_000.0, 0.0, 6.0),
    car("ram 1500", "pickup", 42_000.0, 0.6, 8.0),
    car("gmc sierra 1500", "truck", 44_000.0, 0.6, 8.0),
    car("jeep wrangler", "SUV", 33_000.0, 1.0, 6.0),
    car("jeep grand cherokee", "SUV", 37_000.0, 0.7, 6.0),
    car("nissan altima", "sedan", 24_000.0, 0.0, 4.0),
    car("nissan rogue", "SUV", 26_000.0, 0.3, 4.0),
    car("subaru outback", "wagon", 28_000.0, 1.0, 4.0),
    car("subaru impreza", "hatchback", 21_000.0, 1.0, 4.0),
    car("dodge grand caravan", "mini-van", 28_000.0, 0.0, 6.0),
    car("dodge charger", "sedan", 30_000.0, 0.0, 6.0),
    car("hyundai sonata", "sedan", 23_000.0, 0.0, 4.0),
    car("hyundai elantra", "sedan", 19_000.0, 0.0, 4.0),
    car("kia sorento", "SUV", 28_000.0, 0.3, 4.0),
    car("bmw x5", "SUV", 60_000.0, 0.9, 6.0),
    car("mercedes-benz sprinter 2500", "van", 45_000.0, 0.0, 6.0),
    car("volkswagen jetta", "sedan", 21_000.0, 0.0, 4.0),
    car("chrysler 300", "sedan", 32_000.0, 0.1, 6.0),
    car("cadillac escalade", "SUV", 76_000.0, 0.6, 8.0),
    car("buick enclave", "SUV", 41_000.0, 0.3, 6.0),
    car("acura tl", "sedan", 34_000.0, 0.0, 6.0),
    car("mazda mx-5 miata", "convertible", 28_000.0, 0.0, 4.0),
];
