//! Files written by NumPy and by `safetensors.torch` (see `data/make_data.py`) read back here.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use lstm_core::io::{self, NpyData};
use lstm_core::{LstmConfig, LstmError, ParamKind, Tensor};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn f32_tensor(name: &str) -> Tensor<f32> {
    io::read_npy(&data(name))
        .unwrap()
        .into_f32_tensor(name)
        .unwrap()
}

fn expected_c() -> Vec<f32> {
    (0..24).map(|i| i as f32 * 0.5 - 3.0).collect()
}

#[test]
fn numpy_c_order_and_our_writer_agree_byte_for_byte() {
    let bytes = std::fs::read(data("c_f32.npy")).unwrap();
    let array = io::parse_npy(&bytes).unwrap();
    assert_eq!(array.shape, vec![2, 3, 4]);
    assert_eq!(array.data, NpyData::F32(expected_c()));
    let tensor = Tensor::new(vec![2, 3, 4], expected_c()).unwrap();
    assert_eq!(io::npy_bytes_f32(&tensor).unwrap(), bytes);
    for (name, shape, values) in [
        ("scalar_f32.npy", vec![], vec![1.5f32]),
        ("vector_f32.npy", vec![3], vec![1.0, -2.0, 0.25]),
    ] {
        let bytes = std::fs::read(data(name)).unwrap();
        let tensor = Tensor::new(shape, values).unwrap();
        assert_eq!(
            io::parse_npy(&bytes)
                .unwrap()
                .into_f32_tensor(name)
                .unwrap(),
            tensor
        );
        assert_eq!(io::npy_bytes_f32(&tensor).unwrap(), bytes, "{name}");
    }
    let empty = std::fs::read(data("empty_f32.npy")).unwrap();
    let tensor = io::parse_npy(&empty)
        .unwrap()
        .into_f32_tensor("empty")
        .unwrap();
    assert_eq!(tensor.shape(), &[0, 3]);
    assert_eq!(io::npy_bytes_f32(&tensor).unwrap(), empty);
}

#[test]
fn numpy_fortran_order() {
    let t = f32_tensor("fortran_f32.npy");
    assert_eq!(t.shape(), &[2, 3, 4]);
    assert_eq!(t.data(), expected_c().as_slice());
    // np.save(a.T) of a = arange(6).reshape(2, 3): a.T is [[0, 3], [1, 4], [2, 5]].
    let a = io::read_npy(&data("transposed_f64.npy")).unwrap();
    assert_eq!(a.shape, vec![3, 2]);
    assert_eq!(a.data, NpyData::F64(vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]));
}

#[test]
fn numpy_big_endian() {
    let a = io::read_npy(&data("big_endian_f8.npy")).unwrap();
    assert_eq!(a.shape, vec![3, 2]);
    assert_eq!(
        a.data,
        NpyData::F64((0..6).map(|i| f64::from(i) / 8.0).collect())
    );
    let a = io::read_npy(&data("big_endian_i4_fortran.npy")).unwrap();
    assert_eq!(a.shape, vec![3, 4]);
    assert_eq!(a.data, NpyData::I32((-5..7).collect()));
}

#[test]
fn numpy_lengths_scalars_and_refusals() {
    let l = io::read_npy(&data("lengths_i8.npy")).unwrap();
    assert_eq!(l.into_lengths("lengths").unwrap(), vec![5, 3, 1]);
    let l = io::read_npy(&data("lengths_i4.npy")).unwrap();
    assert_eq!(l.into_lengths("lengths").unwrap(), vec![2, 2]);
    let s = io::read_npy(&data("scalar_f64.npy"))
        .unwrap()
        .into_f64_tensor("s")
        .unwrap();
    assert_eq!((s.shape(), s.data()), (&[][..], &[0.1][..]));
    match io::read_npy(&data("uint16.npy")) {
        Err(LstmError::InFile { source, .. }) => match *source {
            LstmError::UnsupportedDtype { dtype, .. } => assert_eq!(dtype, "<u2"),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn torch_state_dict_with_prefix_projection_and_two_directions() {
    let loaded = io::load_safetensors(&data("lstm_bi_proj.safetensors"), None).unwrap();
    assert_eq!(loaded.prefix, "encoder.rnn.");
    let expected = LstmConfig::new(3, 4)
        .with_num_layers(2)
        .with_bidirectional(true)
        .with_proj_size(2);
    assert_eq!(loaded.weights.config(), &expected);
    assert_eq!(loaded.tensors.len(), 20);
    assert_eq!(loaded.tensors[0].name, "encoder.rnn.weight_ih_l0");
    assert_eq!(loaded.tensors[0].shape, vec![16, 3]);
    assert_eq!(loaded.tensors[19].name, "encoder.rnn.weight_hr_l1_reverse");
    assert!(loaded.tensors.iter().all(|t| t.dtype == "F32"));

    let cell = loaded.weights.cell(0, 0).unwrap();
    assert_eq!(cell.w_ih, f32_tensor("weight_ih_l0.npy").data());
    assert_eq!(
        &cell.w_ih[..3],
        &[-0.003_743_41, 0.268_221_8, -0.411_522_57]
    );
    let last = loaded.weights.cell(1, 1).unwrap();
    assert_eq!(
        last.get(ParamKind::WeightHr).unwrap(),
        f32_tensor("weight_hr_l1_reverse.npy").data()
    );
    assert_eq!(last.b_hh.as_ref().unwrap()[15], 0.295_959_23);

    // Explicit prefixes, and our own file of the same weights loads back identically.
    let again =
        io::load_safetensors(&data("lstm_bi_proj.safetensors"), Some("encoder.rnn")).unwrap();
    assert_eq!(again, loaded);
    assert!(matches!(
        io::load_safetensors(&data("lstm_bi_proj.safetensors"), Some("head")),
        Err(LstmError::InFile { .. })
    ));
    let ours = io::serialize_safetensors(&loaded.weights, "encoder.rnn.").unwrap();
    assert_eq!(
        io::parse_safetensors(&ours, None).unwrap().weights,
        loaded.weights
    );
}

#[test]
fn torch_half_precision_state_dicts() {
    for (file, dtype, reference) in [
        (
            "lstm_bf16.safetensors",
            "BF16",
            "lstm_bf16_weight_hh_l0.npy",
        ),
        ("lstm_f16.safetensors", "F16", "lstm_f16_weight_hh_l0.npy"),
    ] {
        let loaded = io::load_safetensors(&data(file), None).unwrap();
        assert_eq!(loaded.prefix, "");
        assert_eq!(loaded.weights.config(), &LstmConfig::new(2, 3));
        assert!(loaded.tensors.iter().all(|t| t.dtype == dtype), "{file}");
        assert_eq!(
            loaded.weights.cell(0, 0).unwrap().w_hh,
            f32_tensor(reference).data(),
            "{file}"
        );
    }
}
